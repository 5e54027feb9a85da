"""Small networks in the official layout, made by the tests themselves (no files from elsewhere)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

from stylegan_disentangle.networks import Discriminator, Generator

TINY_CONFIGS = {
    "skip16": dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                   synthesis_kwargs=dict(channel_base=128, channel_max=16)),
    "resnet_cond16": dict(z_dim=8, c_dim=3, w_dim=8, img_resolution=16, img_channels=3,
                          mapping_kwargs=dict(num_layers=2),
                          synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture="resnet",
                                                num_fp16_res=1, conv_clamp=256)),
    "orig8_gray": dict(z_dim=4, c_dim=0, w_dim=6, img_resolution=8, img_channels=1, mapping_kwargs=dict(num_layers=1),
                       synthesis_kwargs=dict(channel_base=64, channel_max=8, architecture="orig")),
    "sg3_flat16": dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                       mapping_kwargs=dict(num_layers=2), channel_base=128, channel_max=16),
}


def perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter and buffer (except FIR filters) random values, so that each one matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("resample_filter"):
                continue
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=gen))
    return module.eval()


def tiny_networks(config: str, seed: int = 0) -> dict:
    """{'G', 'G_ema', 'D', 'training_set_kwargs', 'augment_pipe'} for one of TINY_CONFIGS."""
    torch.manual_seed(seed)
    kwargs = TINY_CONFIGS[config]
    G = perturbed(Generator(**kwargs), seed + 1)
    G_ema = perturbed(Generator(**kwargs), seed + 2)
    D = perturbed(Discriminator(c_dim=kwargs["c_dim"], img_resolution=kwargs["img_resolution"],
                                img_channels=kwargs["img_channels"], channel_base=128, channel_max=16), seed + 3)
    return dict(G=G, D=D, G_ema=G_ema, training_set_kwargs=dict(resolution=kwargs["img_resolution"]),
                augment_pipe=None)


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py` as a module (the scripts are not a package; their `main` is what a test calls)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_ws(n: int, seed: int, num_ws: int, w_dim: int) -> torch.Tensor:
    """n standard-normal w, seeded, broadcast to ws [n, num_ws, w_dim] (the W-space models' tests' toy latents)."""
    w = torch.randn(n, w_dim, generator=torch.Generator().manual_seed(seed))
    return w[:, None].expand(-1, num_ws, -1).contiguous()


def orthonormal_rows(k: int, dim: int, seed: int = 7) -> torch.Tensor:
    """k orthonormal rows [k, dim], seeded: the readouts of a planted linear world."""
    q = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)))[0]
    return q[:, :k].T.contiguous()


class ConstantImageG(torch.nn.Module):
    """A stand-in generator for walks: image = w[0] of the first layer everywhere (so brightness and D are known);
    only its shapes and `synthesis` matter."""

    z_dim, c_dim, w_dim, num_ws, img_resolution, img_channels = 4, 0, 4, 3, 4, 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1))
        self.synthesis = self._synthesis

    def _synthesis(self, ws, noise_mode="const", force_fp32=False):
        return ws[:, 0, 0].reshape(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()


class MeanD(torch.nn.Module):
    """A stand-in discriminator: logit = -mean(img), so brighter images look 'less real'."""

    c_dim = 0

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1))

    def forward(self, img, c):
        return -img.mean(dim=(1, 2, 3))[:, None]
