"""Model files: round trip, refusal of foreign generators / other kinds / truncated files; input checks."""

from __future__ import annotations

import pytest
import torch

from stylegan_disentangle.errors import CheckpointError, LatentError
from stylegan_disentangle.latents import generator_fingerprint
from stylegan_disentangle.models import AppearanceStructureAE, ModelFileError, load_model, read_model_file
from tests.helpers import tiny_networks

NUM_WS, W_DIM = 3, 12


def make(sha: str | None = "a" * 64, **kwargs) -> AppearanceStructureAE:
    torch.manual_seed(0)
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=5, struct_dim=2, hidden=8, generator_sha256=sha, **kwargs)
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ae.set_normalization(torch.randn(50, W_DIM) * 2 + 1)


def test_round_trip_restores_the_same_function(tmp_path):
    ae = make()
    path = ae.save(tmp_path / "m.pt")
    loaded = AppearanceStructureAE.load(path)
    ws = torch.randn(4, NUM_WS, W_DIM)
    assert torch.equal(loaded(ws), ae(ws)) and loaded.config == ae.config
    record = read_model_file(path)  # plain dict, readable with weights_only
    assert record["kind"] == "appearance-structure" and record["generator_sha256"] == "a" * 64
    assert path.stat().st_size < 200_000


def test_round_trip_with_a_motion_decoder_and_linear_structure(tmp_path):
    ae = make(motion_weight=1.0, linear_structure=True)
    loaded = AppearanceStructureAE.load(ae.save(tmp_path / "m.pt"))
    assert loaded.has_motion_decoder and loaded.config == ae.config
    t, s = torch.randn(4, NUM_WS, W_DIM), torch.randn(4, NUM_WS, W_DIM)
    assert torch.equal(loaded.transfer_structure(t, s), ae.transfer_structure(t, s))
    # a file of a model without the decoder still loads as one without it (no new keys required)
    plain = AppearanceStructureAE.load(make().save(tmp_path / "plain.pt"))
    assert not plain.has_motion_decoder


def test_a_model_refuses_a_foreign_generator_unless_allowed(tmp_path):
    G = tiny_networks("skip16")["G_ema"]
    path = make(sha=generator_fingerprint(G)).save(tmp_path / "m.pt")
    assert load_model(path, G).kind == "appearance-structure"  # its own generator: accepted
    other = tiny_networks("skip16", seed=1)["G_ema"]
    with pytest.raises(ModelFileError, match="another generator"):
        load_model(path, other)
    with pytest.raises(ModelFileError, match="another generator"):
        AppearanceStructureAE.load(path, generator_sha256="b" * 64)
    assert load_model(path, other, allow_foreign=True) is not None


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    path = make().save(tmp_path / "m.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="cut.pt.*truncated"):
        load_model(cut)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(ModelFileError, match="not a stylegan_disentangle model file"):
        load_model(plain)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match="expected 'other-kind'") as info:
        load_model(path, kind="other-kind")
    assert (info.value.found, info.value.expected) == (make().kind, "other-kind")  # what the CLI words its refusal by
    assert issubclass(ModelFileError, CheckpointError)


def test_the_kind_is_refused_before_the_weights_are_built(tmp_path, monkeypatch):
    path = make().save(tmp_path / "m.pt")
    built = []
    monkeypatch.setattr(type(make()), "load_state_dict", lambda self, *a, **k: built.append(1))
    with pytest.raises(ModelFileError, match="expected 'other-kind'"):
        load_model(path, kind="other-kind")
    assert not built
    load_model(path)
    assert built == [1]


@pytest.mark.parametrize("shape", [(4, NUM_WS, W_DIM + 1), (4, NUM_WS + 1, W_DIM), (4, W_DIM - 1), (W_DIM,)])
def test_wrong_latent_shapes_name_expected_and_actual(shape):
    with pytest.raises(LatentError, match=rf"\[N, {NUM_WS}, {W_DIM}\].*{shape[-1]}"):
        make().encode(torch.zeros(shape))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_latents_are_refused(bad):
    ws = torch.zeros(2, NUM_WS, W_DIM)
    ws[1, 0, 3] = bad
    with pytest.raises(LatentError, match="NaN or inf"):
        make().transfer_structure(ws, torch.zeros(2, NUM_WS, W_DIM))
    with pytest.raises(LatentError, match="decode"):
        make().decode(torch.zeros(2, 4), torch.zeros(2, 2))
