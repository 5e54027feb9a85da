"""The decomposer on CUDA (skipped cleanly without a CUDA device; scripts/gpu_checks.sh runs it): the renderer gives
the CPU's images, a training step (re-render and jitter terms included) runs and saves a checkpoint, and the
shipped decomposer scores the same on CUDA as on the CPU (so bench_decomposer.py's figures there are comparable)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
from stylegan_disentangle.labels.decomposer.renderer import Renderer
from stylegan_disentangle.labels.decomposer.trainer import train_decomposer
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import faces_from_generator, score_decomposer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY = dict(nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)
KEYS = ("image", "mask", "recon_depth", "recon_normal", "shading", "grid")


def _scene(size: int = 32) -> tuple[torch.Tensor, ...]:
    """Two head-like bumps with smooth albedos, lights and generic views (no pixel centre lands on a mesh edge, so
    the z-buffer's decisions are far from ties), in float64 on the CPU."""
    g = torch.Generator().manual_seed(0)
    lin = torch.linspace(-1, 1, size, dtype=torch.float64)
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    depth = (1.1 - 0.15 * torch.exp(-(u**2 + v**2) / 0.5)).expand(2, 1, size, size).contiguous()
    albedo = 0.6 * torch.sin(2.0 * u + 1.5 * v + torch.rand(2, 3, 1, 1, generator=g, dtype=torch.float64) * 6.28)
    light = torch.tensor([[0.3, 0.6, 0.4, -0.2], [0.5, 0.4, -0.7, 0.3]], dtype=torch.float64)
    view = torch.tensor([[7.3, -11.9, 4.1, 0.013, -0.021, 0.0], [-5.2, 17.7, -2.9, -0.008, 0.017, 0.0]],
                        dtype=torch.float64)
    return depth, albedo, light, view


def _render_agreement(device: str) -> None:
    renderer = Renderer()
    scene = _scene()
    ref = renderer.render(*scene)  # float64 on the CPU: the reference
    cpu32 = renderer.render(*(t.float() for t in scene))
    dev64 = renderer.render(*(t.to(device) for t in scene))
    dev32 = renderer.render(*(t.float().to(device) for t in scene))
    assert dev32["image"].device.type == torch.device(device).type
    assert 0.5 < float(ref["mask"].mean()) < 1  # the views leave part of the frame uncovered: the mask is tested
    for key in KEYS:
        # float64 on both devices: the same arithmetic, rounding ~1e-16 relative (the grid is in [-1, 1], depths
        # ~1; the focal length, ~180 px at 32 px, scales rounding up by at most 1e3)
        torch.testing.assert_close(dev64[key].cpu(), ref[key], rtol=0, atol=1e-10, msg=key)
        # float32: the device's rounding is of the CPU's order (other summation orders and fused multiply-adds);
        # 4x the CPU's own float32 error from the reference, plus a few ulps of 1 for values it gets exactly
        cpu_err = float((cpu32[key].double() - ref[key]).abs().max())
        dev_err = float((dev32[key].cpu().double() - ref[key]).abs().max())
        assert dev_err <= 4 * cpu_err + 1e-6, (key, dev_err, cpu_err)


def _train_one_step(device: str, outdir) -> None:
    G = load_synthetic()[0]  # a fresh copy: training moves G to the device
    dec = train_decomposer(G, outdir, steps=1, batch_size=4, decomposer_kwargs=TINY, device=device, log_every=1,
                           progress=False)
    assert {p.device.type for p in dec.parameters()} == {torch.device(device).type}
    (record,) = [json.loads(line) for line in (outdir / "log.jsonl").read_text().splitlines()]
    for key in ("total", "l1", "l1_flip", "rerender", "jitter"):  # stabilize_after 0: both stabilizers ran
        assert math.isfinite(record[key]), (key, record)
    assert (outdir / "preview_000001.png").is_file()
    loaded = load_decomposer(outdir / "checkpoint.pth")  # read back on the CPU
    assert loaded.epoch == 1 and len(loaded.optimizer_states) == 5
    trained = dec.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, trained[key].cpu()), key


def test_cuda_render_matches_cpu(monkeypatch):
    # TF32 matmuls would round the rotation to 10 bits: the comparison is of float32 arithmetic
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    _render_agreement("cuda")


def test_one_training_step_on_cuda(tmp_path):
    _train_one_step("cuda", tmp_path)


def _scores_agree(device: str) -> None:
    G, fmap = load_synthetic()
    images, factors = faces_from_generator(G, fmap, 200, seed=20_000_000)
    cpu = score_decomposer(load_decomposer("synthetic"), images, factors)
    dev = score_decomposer(load_decomposer("synthetic", device=device), images, factors)
    # float32 on both devices: the labels differ by rounding (~1e-6 relative), so every correlation agrees far
    # inside 1e-3; only a flipped z-buffer decision at a silhouette pixel moves the reconstruction's PSNR, and then
    # by a few hundredths of a dB at most over 200 images
    for name, score in cpu["scalars"].items():
        assert abs(score["pearson_r"] - dev["scalars"][name]["pearson_r"]) < 1e-3, name
        assert abs(score["calibrated_mae"] - dev["scalars"][name]["calibrated_mae"]) < 1e-2, name
    for key in ("depth_pearson_r", "albedo_pearson_r", "depth_relief"):
        assert abs(cpu[key] - dev[key]) < 1e-3, key
    assert abs(cpu["recon_psnr_db"] - dev["recon_psnr_db"]) < 0.1


def test_shipped_decomposer_scores_the_same_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    _scores_agree("cuda")
