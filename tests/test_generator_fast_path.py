"""The CPU fast path of the synthesis network (ops/cpu_synthesis.py) computes what the reference path computes.

Tolerance: the two paths sum the same products in a different order (demodulation as a matmul, gains folded into
the weights, channels_last convolutions), so they differ by float32 rounding. A dot product of K terms rounds to
within ~sqrt(K) * eps of its magnitude (typical, blocked summation), and each of the L layers adds its share:
    |fast - reference| <= L * sqrt(K_max) * eps32 * max|reference|     (K_max = largest fan-in, in_channels * 9)
A wrong bias, gain, noise or filter tap moves the images by far more (>= 1e-3 of their range).
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from stylegan_disentangle import load_network_pkl
from stylegan_disentangle.networks import Generator
from stylegan_disentangle.networks import synthesis as synthesis_module
from stylegan_disentangle.ops import _dispatch, cpu_reference_path, cpu_synthesis, setup_filter, upsample2d
from tests.conftest import REFERENCE_DIR
from tests.helpers import TINY_CONFIGS, perturbed

EPS32 = torch.finfo(torch.float32).eps
EPS16 = torch.finfo(torch.float16).eps
REFERENCES = ["sg2ada_skip_32", "sg2ada_resnet_cond_32", "sg2ada_orig_16", "sg3_stylegan2_32", "tf_stylegan2_32"]
NETWORKS = [*TINY_CONFIGS, "synthetic", *REFERENCES]
_loaded: dict[str, Generator] = {}


def _network(name: str) -> Generator:
    if name not in _loaded:
        if name in TINY_CONFIGS:
            torch.manual_seed(0)
            _loaded[name] = perturbed(Generator(**TINY_CONFIGS[name]), 1)
        elif name == "synthetic":
            _loaded[name] = load_network_pkl("synthetic")["G_ema"].eval()
        else:
            path = REFERENCE_DIR / f"{name}.pkl"
            if not path.is_file():
                pytest.skip(f"reference network {path} not found (it sits beside the clone in CI)")
            _loaded[name] = load_network_pkl(path)["G_ema"].eval()
    return _loaded[name]


def _tolerance(G: Generator, reference: torch.Tensor, eps: float = EPS32) -> float:
    layers = [m for m in G.synthesis.modules() if isinstance(m, synthesis_module.SynthesisLayer)]
    fan_in = max(m.weight[0].numel() for m in layers)
    return (len(layers) + 1) * math.sqrt(fan_in) * eps * reference.abs().max().item()


@pytest.fixture
def fast_calls(monkeypatch):
    """Count the synthesis layers that ran on the CPU fast path."""
    calls = []
    original = synthesis_module.synthesis_layer_cpu

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(synthesis_module, "synthesis_layer_cpu", counting)
    return calls


def _inputs(G: Generator, batch: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, G.z_dim], generator=gen)
    c = torch.eye(G.c_dim)[torch.randint(G.c_dim, [batch], generator=gen)] if G.c_dim else None
    return z, c


def _both(G: Generator, z, c, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(11)
    fast = G(z, c, **kwargs)
    with cpu_reference_path():
        torch.manual_seed(11)
        reference = G(z, c, **kwargs)
    return fast, reference


@pytest.mark.parametrize("noise_mode", ["const", "random", "none"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", NETWORKS)
def test_fast_path_equals_reference_path_in_fp32(name, batch, noise_mode, fast_calls):
    G = _network(name)
    z, c = _inputs(G, batch)
    fast, reference = _both(G, z, c, truncation_psi=0.7, noise_mode=noise_mode, force_fp32=True)
    assert fast_calls, "the CPU fast path did not run"
    assert fast.shape == reference.shape and fast.is_contiguous()
    err, tol = (fast - reference).abs().max().item(), _tolerance(G, reference)
    assert err <= tol, f"{name} batch {batch} noise {noise_mode}: differs by {err:.3g} (tolerance {tol:.3g})"


@pytest.mark.parametrize("name", ["resnet_cond16", "sg2ada_resnet_cond_32", "sg3_stylegan2_32"])
def test_networks_with_fp16_blocks_agree_in_their_default_precision(name):
    """fp16 blocks keep the reference ops (fp16 on CPU: StyleGAN2-ADA classes) or run fp32 on the fast path
    (StyleGAN3-repo classes); fp32 rounding differences entering an fp16 block may flip one fp16 rounding."""
    G = _network(name)
    z, c = _inputs(G, 4)
    fast, reference = _both(G, z, c, noise_mode="const")
    err, tol = (fast - reference).abs().max().item(), _tolerance(G, reference, EPS16)
    assert err <= tol, f"{name}: differs by {err:.3g} (tolerance {tol:.3g})"


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", ["skip16", "resnet_cond16", "orig8_gray"])
def test_gradients_through_the_fast_path_equal_the_reference_ones(name, batch, fast_calls):
    G = _network(name)
    z, c = _inputs(G, batch)
    weights = torch.randn([batch, G.img_channels, G.img_resolution, G.img_resolution],
                          generator=torch.Generator().manual_seed(5))
    grads = []
    with torch.enable_grad():
        for reference in (False, True):
            G.requires_grad_(True)
            G.zero_grad(set_to_none=True)
            ws = G.mapping(z, c).detach().requires_grad_(True)
            with cpu_reference_path() if reference else contextlib.nullcontext():
                img = G.synthesis(ws, noise_mode="const", force_fp32=True)
            (img * weights).sum().backward()
            grads.append({"ws": ws.grad, **{k: p.grad.clone() for k, p in G.named_parameters()
                                            if p.grad is not None}})
    assert fast_calls, "the CPU fast path did not run under autograd"
    fast, reference = grads
    assert set(fast) == set(reference) and len(fast) > 10
    for key, expected in reference.items():
        scale = expected.abs().max().item()
        tol = 10 * _tolerance(G, expected) + 1e-30 if scale > 0 else 0.0
        err = (fast[key] - expected).abs().max().item()
        assert err <= tol, f"{name}: grad of {key} differs by {err:.3g} (largest {scale:.3g}, tolerance {tol:.3g})"


def test_reference_path_is_selectable_by_context_and_environment(monkeypatch, fast_calls):
    G = _network("skip16")
    z, _ = _inputs(G, 2)
    with cpu_reference_path():
        G(z, None, noise_mode="const")
    assert not fast_calls
    monkeypatch.setenv(cpu_synthesis.ENV_CPU_FAST, "0")
    G(z, None, noise_mode="const")
    assert not fast_calls
    monkeypatch.setenv(cpu_synthesis.ENV_CPU_FAST, "1")
    G(z, None, noise_mode="const")
    assert len(fast_calls) == 2 * len(G.synthesis.block_resolutions) - 1


def test_where_the_kernels_run_the_fast_path_stands_aside(monkeypatch):
    x = torch.zeros([1, 4, 8, 8])
    assert cpu_synthesis.cpu_fast_path_applies(x)
    assert not cpu_synthesis.cpu_fast_path_applies(x.double())
    assert not cpu_synthesis.cpu_fast_path_applies(x.half())
    monkeypatch.setattr(_dispatch, "kernel_device", lambda t: True)  # what CUDA tensors (or the host build) see
    assert not cpu_synthesis.cpu_fast_path_applies(x)


def test_weight_changes_reach_the_cached_kernels():
    """Kernels derived from the weights are cached between calls; writes through copy_, load_state_dict and (after
    clear_cpu_cache) .data must all be seen."""
    torch.manual_seed(0)
    G = perturbed(Generator(**TINY_CONFIGS["skip16"]), 1)
    other = perturbed(Generator(**TINY_CONFIGS["skip16"]), 2)
    z, _ = _inputs(G, 1)
    before = G(z, None, noise_mode="const")
    G.load_state_dict(other.state_dict())
    fast, reference = _both(G, z, None, noise_mode="const")
    assert (fast - before).abs().max() > 1e-2 and (fast - reference).abs().max() <= _tolerance(G, reference)
    weight = G.synthesis.b8.conv1.weight
    weight.copy_(weight * 1.5)
    fast, reference = _both(G, z, None, noise_mode="const")
    assert (fast - reference).abs().max() <= _tolerance(G, reference)
    weight.data.mul_(-1)
    cpu_synthesis.clear_cpu_cache()
    fast, reference = _both(G, z, None, noise_mode="const")
    assert (fast - reference).abs().max() <= _tolerance(G, reference)


@pytest.mark.parametrize("size", [1, 4, 7])
def test_image_upsampling_as_one_transposed_conv_equals_upsample2d(size):
    f = setup_filter([1, 3, 3, 1])
    img = torch.randn([2, 3, size, size], generator=torch.Generator().manual_seed(size))
    fast = cpu_synthesis.upsample2d_cpu(img, f)
    reference = upsample2d(img, f)
    assert fast.shape == reference.shape == (2, 3, 2 * size, 2 * size)
    assert (fast - reference).abs().max() <= 16 * EPS32 * img.abs().max()


def test_demodulation_coefficients_as_a_matmul_equal_the_definition():
    gen = torch.Generator().manual_seed(0)
    weight, styles = torch.randn([6, 5, 3, 3], generator=gen), torch.randn([4, 5], generator=gen)
    direct = ((weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    got = cpu_synthesis.demodulation_coefficients(weight, styles)
    assert torch.allclose(got, direct, rtol=64 * EPS32, atol=0)


@pytest.mark.parametrize("noise_mode", ["const", "random"])
@pytest.mark.parametrize("name", ["skip16", "synthetic"])
def test_large_activations_run_one_sample_at_a_time_with_the_same_result(name, noise_mode, monkeypatch, fast_calls):
    """Layers whose output per sample is large loop over the batch (here: every layer); seeded random noise is
    drawn for the whole batch before the loop, as on the reference path."""
    monkeypatch.setattr(cpu_synthesis, "PER_SAMPLE_MIN_OUTPUT", 1)
    inner, original = [], cpu_synthesis.synthesis_layer_cpu
    monkeypatch.setattr(cpu_synthesis, "synthesis_layer_cpu", lambda x, *a, **k: (inner.append(x.shape[0]),
                                                                                   original(x, *a, **k))[1])
    G = _network(name)
    z, c = _inputs(G, 3)
    fast, reference = _both(G, z, c, noise_mode=noise_mode, force_fp32=True)
    assert fast_calls and inner and set(inner) == {1}
    assert (fast - reference).abs().max() <= _tolerance(G, reference)
    with torch.enable_grad():
        ws = G.mapping(z, c).detach().requires_grad_(True)
        G.synthesis(ws, noise_mode="const").square().sum().backward()
        expected = ws.grad.clone()
        ws.grad = None
        with cpu_reference_path():
            G.synthesis(ws, noise_mode="const").square().sum().backward()
    assert (ws.grad - expected).abs().max() <= 10 * _tolerance(G, ws.grad)


def test_a_call_under_inference_mode_leaves_gradients_to_ws_working(fast_calls):
    """The fast path remembers tensors derived from the weights; made under torch.inference_mode they could not be
    saved for backward by a later call that needs gradients to ws (project's)."""
    torch.manual_seed(0)
    G = perturbed(Generator(**TINY_CONFIGS["skip16"]), 1).requires_grad_(False)
    z, c = _inputs(G, 2)
    with torch.inference_mode():
        G(z, c, noise_mode="const")
    grads = []
    with torch.enable_grad():
        for reference in (False, True):
            ws = G.mapping(z, c).detach().requires_grad_(True)
            with cpu_reference_path() if reference else contextlib.nullcontext():
                G.synthesis(ws, noise_mode="const").square().sum().backward()
            grads.append(ws.grad)
    assert fast_calls
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * grads[1].abs().max().item())


def test_a_network_built_under_inference_mode_runs_on_the_fast_path():
    with torch.inference_mode():
        torch.manual_seed(0)
        G = perturbed(Generator(**TINY_CONFIGS["skip16"]), 1)
        z, c = _inputs(G, 2)
        fast = G(z, c, noise_mode="const")
        with cpu_reference_path():
            reference = G(z, c, noise_mode="const")
    assert (fast - reference).abs().max().item() <= _tolerance(G, reference)
