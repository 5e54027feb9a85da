"""The decomposer trainer's on-disk image bank: deterministic, resumable, atomic, refuses a foreign bank."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.cli import main
from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.labels.decomposer import image_bank
from stylegan_disentangle.labels.decomposer.image_bank import ImageBank
from stylegan_disentangle.labels.decomposer.trainer import train_decomposer
from stylegan_disentangle.synthetic.checkpoint import load_synthetic

TINY = dict(nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)


@pytest.fixture(scope="module")
def G():
    return load_synthetic()[0]


def test_bank_rows_are_the_generators_seeded_images_quantized(G, tmp_path):
    bank = ImageBank.open_or_build(G, tmp_path, 5, 32, seed=7, progress=False)
    assert len(bank) == 5 and bank.images.dtype == np.uint8 and bank.images.shape == (5, 3, 32, 32)
    gen = torch.Generator().manual_seed(7 * 1_000_003)  # chunk 0 of seed 7
    z = torch.randn([image_bank.CHUNK, G.z_dim], generator=gen)[:5]
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, torch.zeros([5, G.c_dim])), noise_mode="const").clamp(-1, 1)
    stored = torch.from_numpy(np.array(bank.images)).float() / 127.5 - 1
    assert (stored - img).abs().max() <= 0.5 / 127.5 + 1e-6  # uint8 rounding, nothing else
    twins = torch.from_numpy(np.array(bank.jitter)).float() / 127.5 - 1
    diff = (twins - stored).abs().mean(dim=(1, 2, 3))
    assert (diff > 0).all() and (diff < (stored - stored.roll(1, 0)).abs().mean(dim=(1, 2, 3))).all()
    # each row keeps its w (float32, exact): what the latent light teacher reads
    with torch.no_grad():
        w = G.mapping(z, torch.zeros([5, G.c_dim]))[:, 0]
    assert bank.ws.dtype == np.float32 and bank.ws.shape == (5, G.w_dim)
    np.testing.assert_array_equal(np.array(bank.ws), w.numpy())
    first, twin, first_w = bank.batch(torch.Generator().manual_seed(0), 8)
    again = bank.batch(torch.Generator().manual_seed(0), 8)
    assert first.shape == (8, 3, 32, 32) and torch.equal(first, again[0]) and torch.equal(twin, again[1])
    assert first.min() >= -1 and first.max() <= 1
    idx = np.sort(torch.randint(0, 5, [8], generator=torch.Generator().manual_seed(0)).numpy())
    assert torch.equal(first_w, w[idx]) and torch.equal(first_w, again[2])


def test_an_interrupted_build_resumes_to_the_same_bank_and_is_never_half_visible(G, tmp_path, monkeypatch):
    size = 2 * image_bank.CHUNK + 10
    straight = ImageBank.open_or_build(G, tmp_path / "a", size, 16, seed=1, progress=False)
    real_chunk = ImageBank._chunk
    calls = []

    def dies_at_chunk_2(*args):
        calls.append(args[2])
        if args[2] == 2:
            raise KeyboardInterrupt
        return real_chunk(*args)

    monkeypatch.setattr(ImageBank, "_chunk", staticmethod(dies_at_chunk_2))
    with pytest.raises(KeyboardInterrupt):
        ImageBank.open_or_build(G, tmp_path / "b", size, 16, seed=1, progress=False)
    assert not (tmp_path / "b" / "images.npy").exists()  # only the .partial files and the progress record
    assert json.loads((tmp_path / "b" / "bank.json").read_text())["filled"] == 2 * image_bank.CHUNK
    monkeypatch.setattr(ImageBank, "_chunk", staticmethod(real_chunk))
    resumed = ImageBank.open_or_build(G, tmp_path / "b", size, 16, seed=1, progress=False)
    assert np.array_equal(straight.images, resumed.images) and np.array_equal(straight.jitter, resumed.jitter)
    assert np.array_equal(straight.ws, resumed.ws)
    assert not list((tmp_path / "b").glob("*.partial.npy"))

    # interrupted again, then the partial arrays lost (the progress record outlived them): built over from chunk 0
    monkeypatch.setattr(ImageBank, "_chunk", staticmethod(dies_at_chunk_2))
    with pytest.raises(KeyboardInterrupt):
        ImageBank.open_or_build(G, tmp_path / "c", size, 16, seed=1, progress=False)
    for partial in (tmp_path / "c").glob("*.partial.npy"):
        partial.unlink()
    calls.clear()
    monkeypatch.setattr(ImageBank, "_chunk", staticmethod(lambda *args: calls.append(args[2]) or real_chunk(*args)))
    rebuilt = ImageBank.open_or_build(G, tmp_path / "c", size, 16, seed=1, progress=False)
    assert calls == [0, 0, 1, 2]  # the generator check, then every chunk
    assert np.array_equal(straight.images, rebuilt.images)

    # a partial build resumed with another generator is refused before anything is added to it
    monkeypatch.setattr(ImageBank, "_chunk", staticmethod(dies_at_chunk_2))
    with pytest.raises(KeyboardInterrupt):
        ImageBank.open_or_build(G, tmp_path / "d", size, 16, seed=1, progress=False)
    monkeypatch.setattr(ImageBank, "_chunk", staticmethod(real_chunk))
    other = copy.deepcopy(G)
    with torch.no_grad():
        for p in other.synthesis.parameters():
            p.add_(0.5 * torch.randn_like(p))
    with pytest.raises(StyleGANDisentangleError, match="another generator"):
        ImageBank.open_or_build(other, tmp_path / "d", size, 16, seed=1, progress=False)
    assert json.loads((tmp_path / "d" / "bank.json").read_text())["filled"] == 2 * image_bank.CHUNK


def test_a_bank_of_other_settings_or_another_generator_is_refused(G, tmp_path):
    ImageBank.open_or_build(G, tmp_path, 4, 16, seed=0, progress=False)
    with pytest.raises(StyleGANDisentangleError, match="other settings"):
        ImageBank.open_or_build(G, tmp_path, 8, 16, seed=0, progress=False)
    other = copy.deepcopy(G)
    with torch.no_grad():
        for p in other.synthesis.parameters():
            p.add_(0.5 * torch.randn_like(p))
    with pytest.raises(StyleGANDisentangleError, match="another generator"):
        ImageBank.open_or_build(other, tmp_path, 4, 16, seed=0, progress=False)
    assert len(ImageBank.open_or_build(G, tmp_path, 4, 16, seed=0)) == 4  # the right generator still opens it


def test_training_on_a_bank_runs_the_stabilizers_and_resumes_bit_identically(G, tmp_path):
    kwargs = dict(batch_size=4, decomposer_kwargs=TINY, bank_size=40, stabilize_after=1, log_every=1,
                  preview_every=100, checkpoint_every=2, progress=False)
    straight = train_decomposer(G, tmp_path / "a", steps=4, **kwargs)
    train_decomposer(G, tmp_path / "b", steps=2, **kwargs)
    resumed = train_decomposer(G, tmp_path / "b", steps=4, **kwargs)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert {"jitter", "rerender"} <= set(log[-1]) and "jitter" not in log[0]
    assert json.loads((tmp_path / "a" / "train_state.json").read_text())["config"]["bank_size"] == 40
    assert json.loads((tmp_path / "a" / "bank_time.json").read_text())["bank_seconds"] > 0
    assert len(ImageBank.open_or_build(G, tmp_path / "a" / "bank", 40, 32, seed=0)) == 40


def test_train_decomposer_cli_bank_option(tmp_path):
    args = ["train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--nf", "16", "--outdir",
            str(tmp_path), "--quiet", "--device", "cpu", "--bank", "6"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "train_state.json").read_text())["config"]["bank_size"] == 6
    assert json.loads((tmp_path / "bank" / "bank.json").read_text())["complete"]


def test_a_damaged_bank_array_is_refused_naming_the_file(G, tmp_path):
    ImageBank.open_or_build(G, tmp_path, 4, 16, seed=0, progress=False)
    path = tmp_path / "jitter.npy"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(StyleGANDisentangleError, match="jitter.npy"):
        ImageBank.open_or_build(G, tmp_path, 4, 16, seed=0, progress=False)
    # the w array too: another width, or another dtype
    ImageBank.open_or_build(G, tmp_path / "w", 4, 16, seed=0, progress=False)
    for bad in (np.zeros((4, G.w_dim + 1), np.float32), np.zeros((4, G.w_dim), np.float64)):
        np.save(tmp_path / "w" / "ws.npy", bad)
        with pytest.raises(StyleGANDisentangleError, match="ws.npy"):
            ImageBank.open_or_build(G, tmp_path / "w", 4, 16, seed=0, progress=False)


@pytest.mark.parametrize("quiet", [["--quiet"], []])
def test_train_decomposer_shows_no_bar_off_a_terminal_or_under_the_global_quiet(tmp_path, quiet):
    """The global --quiet means no progress bars; without it, a bar only on a terminal (CliRunner's output is not)."""
    args = [*quiet, "train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--nf", "16", "--outdir",
            str(tmp_path), "--device", "cpu", "--bank", "6"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "train decomposer" not in result.output and "image bank" not in result.output, result.output
