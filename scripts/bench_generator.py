#!/usr/bin/env python
"""Benchmark our StyleGAN2 generator: images/s, ms/image, achieved TFLOP/s and peak memory, side by side with a
baseline generator holding the same weights, in the same process.

Configurations: 32x32 (the shipped synthetic checkpoint, `load_network_pkl("synthetic")`), 256x256 (random weights,
channel_base 16384) and 1024x1024 config-F (random weights, channel_base 32768, 8 mapping layers); any batch sizes.
Baselines (`--baseline`): `reference` (default: our own unoptimised path, the pure-PyTorch reference ops; on CPU
it runs as fast as the official code), `official` (the official classes, imported from a stylegan2-ada-pytorch
or stylegan3 checkout given by `--official-repo`, built with the same init kwargs and loaded with our state dict)
or `none`. Baseline and our rows are timed interleaved (one call of each per repetition), so that load from other
jobs falls on both; the last line printed is the time ratio ours / baseline for every (resolution, batch).
For GPUs (issue 3): reference ops vs our CUDA kernels, precisions (below), channels_last half-precision blocks,
eager vs CUDA graphs vs torch.compile.

    python scripts/bench_generator.py --threads 1 --resolutions 256 1024 --batches 1 4     # vs our reference path
    python scripts/bench_generator.py --baseline official --official-repo ~/stylegan2-ada-pytorch
    python scripts/bench_generator.py --batches 1 8 32 --impls ref cuda --precisions fp32 tf32 fp16 bf16 \\
        --modes eager graphs --modconv fused --epilogue fused separate --channels-last both --json gpu.json

Precisions: fp32 (exact: TF32 tensor cores off), tf32 (float32 storage, TF32 convolutions and matmuls),
fp16 (the official fp16 blocks on every resolution, conv_clamp 256), bf16 (the same blocks in bfloat16:
half_dtype=torch.bfloat16; mapping, styles and demodulation stay float32) and bf16-autocast (torch.autocast
around the whole float32 generator, for comparison). On CPU, float32 runs on the CPU fast path
(ops/cpu_synthesis.py), where `--modconv` makes no difference.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from stylegan_disentangle.checkpoints import load_network_pkl
from stylegan_disentangle.networks import Generator
from stylegan_disentangle.networks.checks import fast_path
from stylegan_disentangle.ops import cpu_reference_path
from stylegan_disentangle.utils import atomic_write, resolve_device
from stylegan_disentangle.utils.script_args import nonnegative_int, positive_int, run_script

H200_BF16_TFLOPS = 790.0  # measured dense bf16 rate of the lent H200 (device tool notes)
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "bf16-autocast")
HALF_BLOCK_PRECISIONS = ("fp16", "bf16")
SYNTHETIC_RESOLUTION = 32  # --resolutions 32 means the shipped synthetic checkpoint
MODCONV = {"default": None, "non-fused": False, "fused": True}


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for float32 convolutions and matmuls (on by default for cuDNN convolutions in torch)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def generator_kwargs(res: int, precision: str, channels_last: bool) -> dict:
    """Init kwargs (StyleGAN2-ADA form) of the benchmarked network at resolution `res`."""
    if res == SYNTHETIC_RESOLUTION:
        kwargs = load_network_pkl("synthetic")["G_ema"]._init_kwargs
        kwargs = dict(kwargs, synthesis_kwargs=dict(kwargs.get("synthesis_kwargs") or {}))
    else:
        kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                      mapping_kwargs=dict(num_layers=8),
                      synthesis_kwargs=dict(channel_base=16384 if res <= 256 else 32768, channel_max=512))
    if precision in HALF_BLOCK_PRECISIONS:
        kwargs["synthesis_kwargs"].update(num_fp16_res=int(math.log2(res)), conv_clamp=256,
                                          fp16_channels_last=channels_last)
    return kwargs


def reference_generator(res: int, device: torch.device) -> Generator:
    """The fp32 network whose weights every row uses: the shipped checkpoint at 32, random weights otherwise."""
    if res == SYNTHETIC_RESOLUTION:
        G = load_network_pkl("synthetic")["G_ema"]
    else:
        torch.manual_seed(0)
        G = Generator(**generator_kwargs(res, "fp32", False))
    return G.eval().requires_grad_(False).to(device)


def official_generator(repo: str, init_kwargs: dict, state_dict: dict) -> torch.nn.Module:
    """The official Generator class from a stylegan2-ada-pytorch checkout (training/networks.py) or a stylegan3
    checkout (training/networks_stylegan2.py), built with the same init kwargs, holding our weights."""
    root = Path(repo).expanduser().resolve()
    if not (root / "training").is_dir() or not (root / "torch_utils").is_dir():
        raise SystemExit(f"--official-repo {root}: expected a stylegan2-ada-pytorch or stylegan3 checkout "
                         "(with training/ and torch_utils/ folders)")
    sys.path.insert(0, str(root))
    kwargs = {k: v for k, v in init_kwargs.items() if k != "synthesis_kwargs"}
    synthesis = dict(init_kwargs.get("synthesis_kwargs") or {})
    if (root / "training" / "networks_stylegan2.py").is_file():  # stylegan3 repo: flat synthesis kwargs
        import training.networks_stylegan2 as official  # noqa: PLC0415

        G = official.Generator(**kwargs, **{"num_fp16_res": 0, "conv_clamp": None, **synthesis})
    else:
        import training.networks as official  # noqa: PLC0415

        G = official.Generator(**kwargs, synthesis_kwargs=synthesis)
    missing, unexpected = G.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise SystemExit(f"the official Generator's state dict differs from ours: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return G.eval().requires_grad_(False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_call(G: Generator, z: torch.Tensor, precision: str, fused: bool | None, mode: str):
    """A zero-argument callable producing images for the fixed input z."""
    autocast = (torch.autocast(z.device.type, dtype=torch.bfloat16) if precision == "bf16-autocast"
                else contextlib.nullcontext())
    kwargs = dict(noise_mode="const", fused_modconv=fused, force_fp32=precision not in HALF_BLOCK_PRECISIONS)
    if precision == "bf16":
        kwargs["half_dtype"] = torch.bfloat16
    model = torch.compile(G) if mode == "compile" else G

    def eager():
        with autocast:
            return model(z, None, **kwargs)

    if mode != "graphs":
        return eager
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            eager()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = eager()

    def replay():
        graph.replay()
        return static_out

    return replay


def time_calls(calls: list, reps: int, device: torch.device) -> tuple[list[float], list[torch.Tensor]]:
    """Median seconds of each call (after one warm-up call each), the calls interleaved rep by rep; and each
    call's last output (float32, on the CPU)."""
    times, outputs = [[] for _ in calls], [None for _ in calls]
    for i in range(reps + 1):
        for k, call in enumerate(calls):
            _sync(device)
            start = time.perf_counter()
            out = call()
            _sync(device)
            if i > 0:
                times[k].append(time.perf_counter() - start)
            outputs[k] = out
    return [sorted(t)[len(t) // 2] for t in times], [o.detach().float().cpu() for o in outputs]


def baseline_call(G: torch.nn.Module, z: torch.Tensor, kind: str):
    """The baseline's zero-argument call: the official default G(z, c) call (fp32, const noise); for our reference
    path, with the CPU fast path off and the pure-PyTorch ops forced."""
    def call():
        if kind == "official":
            return G(z, None, noise_mode="const", force_fp32=True)
        previous = os.environ.get("STYLEGAN_DISENTANGLE_REFERENCE_OPS")
        os.environ["STYLEGAN_DISENTANGLE_REFERENCE_OPS"] = "1"
        try:
            with cpu_reference_path():
                return G(z, None, noise_mode="const", force_fp32=True)
        finally:
            if previous is None:
                os.environ.pop("STYLEGAN_DISENTANGLE_REFERENCE_OPS")
            else:
                os.environ["STYLEGAN_DISENTANGLE_REFERENCE_OPS"] = previous
    return call


def count_flops(G: Generator, device: torch.device) -> float:
    """FLOPs of one image (mapping + synthesis, non-fused modconv, fp32), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    z = torch.randn([1, G.z_dim], device=device)
    with FlopCounterMode(display=False) as counter:
        G(z, None, noise_mode="const", fused_modconv=False, force_fp32=True)
    return float(counter.get_total_flops())


def with_env(call, env: dict[str, str]):
    """call, run with the environment variables `env` set (rows of one group are timed interleaved)."""
    def wrapped():
        os.environ.update(env)
        return call()
    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=positive_int, nargs="+", default=[256, 1024], choices=[32, 256, 1024],
                        help="32 is the shipped synthetic checkpoint; 256 and 1024 use random weights")
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[1, 4])
    parser.add_argument("--baseline", choices=["reference", "official", "none"], default="reference",
                        help="what every row is compared with, timed interleaved in the same process")
    parser.add_argument("--official-repo", default=None,
                        help="with --baseline official: a stylegan2-ada-pytorch (or stylegan3) checkout")
    parser.add_argument("--impls", nargs="+", default=["ref"], choices=["ref", "cuda"],
                        help="pure-PyTorch reference ops or our CUDA kernels (CUDA devices only)")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=["eager", "graphs", "compile"])
    parser.add_argument("--modconv", nargs="+", default=["default"], choices=list(MODCONV),
                        help="fused_modconv: default (the official rule), non-fused or fused")
    parser.add_argument("--epilogue", nargs="+", default=["fused"], choices=["fused", "separate"],
                        help="with --impls cuda: the one-pass modconv epilogue kernel, or bias_act after addcmul")
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="off",
                        help="channels_last memory format in the fp16 blocks")
    parser.add_argument("--reps", type=positive_int, default=3, help="timed repetitions per row (median is reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=nonnegative_int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (TFLOP/s column)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    args = parser.parse_args()
    if args.baseline == "official" and not args.official_repo:
        parser.error("--baseline official needs --official-repo PATH (a stylegan2-ada-pytorch checkout)")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    hardware = torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "cpu"
    print(f"device={device} ({hardware}), torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"baseline={args.baseline}")
    print(f"{'res':>5} {'batch':>5} {'impl':>4} {'prec':>13} {'cl':>3} {'mode':>7} {'modconv':>9} {'epilogue':>8} "
          f"{'img/s':>9} {'ms/img':>9} {'TFLOP/s':>8} {'peak GiB':>8} {'max|d| fp32':>11} {'max|d| base':>11} "
          f"{'vs base':>8}")
    channels_last_options = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]
    rows, ratios = [], []
    for res in args.resolutions:
        reference = reference_generator(res, device)
        flops = None if args.no_flops else count_flops(reference, device)
        baseline_G = None
        if args.baseline == "official":
            baseline_G = official_generator(args.official_repo, generator_kwargs(res, "fp32", False),
                                            reference.state_dict()).to(device)
        elif args.baseline == "reference":
            baseline_G = reference
        for batch in args.batches:
            z = torch.randn([batch, reference.z_dim], device=device, generator=torch.Generator(device).manual_seed(1))
            set_tf32(False)
            names, calls, timed = [], [], []

            def add(call, calls: list = calls, timed: list = timed) -> None:
                """CPU: keep the call, to be timed interleaved with the others. CUDA: time it now, alone, and let
                it go (its graphs and buffers), measuring its peak memory."""
                if not on_cuda:
                    calls.append(call)
                    return
                torch.cuda.reset_peak_memory_stats(device)
                with torch.no_grad(), fast_path():
                    (sec,), (out,) = time_calls([call], args.reps, device)
                timed.append((sec, out, torch.cuda.max_memory_allocated(device) / 2**30))

            if baseline_G is not None:
                names.append(None)
                add(baseline_call(baseline_G, z, args.baseline))
            for impl, precision, cl, mode, modconv, epilogue in itertools.product(
                    args.impls, args.precisions, channels_last_options, args.modes, args.modconv, args.epilogue):
                if (impl == "cuda" or mode == "graphs") and not on_cuda:
                    continue
                if cl and precision not in HALF_BLOCK_PRECISIONS:
                    continue
                if impl == "ref" and epilogue != args.epilogue[0]:
                    continue  # the reference path has one epilogue only
                env = {"STYLEGAN_DISENTANGLE_FUSED_EPILOGUE": "1" if epilogue == "fused" else "0",
                       "STYLEGAN_DISENTANGLE_REFERENCE_OPS": "1" if impl == "ref" else "0"}
                os.environ.update(env)
                G = Generator(**generator_kwargs(res, precision, cl)).eval().requires_grad_(False)
                G.load_state_dict(reference.state_dict())
                G = G.to(device)
                with torch.no_grad(), fast_path():
                    call = make_call(G, z, precision, MODCONV[modconv], mode)
                names.append((impl, precision, cl, mode, modconv, epilogue))
                add(with_env(lambda c=call, p=precision: (set_tf32(p == "tf32"), c())[1], env))
                del G, call
            with torch.no_grad(), fast_path():
                if on_cuda:
                    seconds, outputs, peaks = (list(t) for t in zip(*timed))
                else:
                    seconds, outputs = time_calls(calls, args.reps, device)
                    peaks = [None] * len(seconds)
                set_tf32(False)
                expected = (outputs[0] if args.baseline == "reference"
                            else baseline_call(reference, z, "reference")().float().cpu())
            base_seconds = seconds[0] if baseline_G is not None else None
            base_out = outputs[0] if baseline_G is not None else None
            for name, sec, out, peak_gib in zip(names, seconds, outputs, peaks):
                if name is None:
                    name = (args.baseline, "fp32", False, "eager", "default", "-")
                impl, precision, cl, mode, modconv, epilogue = name
                max_diff = float((out - expected).abs().max())
                base_diff = float((out - base_out).abs().max()) if base_out is not None else None
                row = dict(resolution=res, batch=batch, impl=impl, precision=precision, channels_last=cl, mode=mode,
                           modconv=modconv, epilogue=epilogue if impl == "cuda" else "ref",
                           images_per_s=batch / sec, ms_per_image=1000 * sec / batch,
                           flops_per_image=flops, tflops=(flops * batch / sec / 1e12) if flops else None,
                           peak_gib=peak_gib,
                           max_abs_diff_vs_fp32=max_diff, max_abs_diff_vs_baseline=base_diff,
                           time_vs_baseline=(sec / base_seconds) if base_seconds else None)
                rows.append(row)
                tflops = f"{row['tflops']:.3f}" if row["tflops"] is not None else "-"
                peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "-"
                bdiff = f"{base_diff:.2e}" if base_diff is not None else "-"
                vs = f"{row['time_vs_baseline']:.2f}x" if base_seconds else "-"
                label = "fast" if impl == "ref" and not on_cuda and precision in ("fp32", "tf32") else impl
                print(f"{res:>5} {batch:>5} {label:>4} {precision:>13} {'y' if cl else 'n':>3} {mode:>7} "
                      f"{modconv:>9} {row['epilogue']:>8} {row['images_per_s']:>9.3f} {row['ms_per_image']:>9.1f} "
                      f"{tflops:>8} {peak:>8} {max_diff:>11.2e} {bdiff:>11} {vs:>8}", flush=True)
            if base_seconds and len(seconds) > 1:
                ratios.append((res, batch, min(seconds[1:]) / base_seconds))
    os.environ.pop("STYLEGAN_DISENTANGLE_REFERENCE_OPS", None)
    os.environ.pop("STYLEGAN_DISENTANGLE_FUSED_EPILOGUE", None)
    if on_cuda and rows:
        best = max(rows, key=lambda r: r["images_per_s"])
        if best["tflops"]:
            share = 100 * best["tflops"] / H200_BF16_TFLOPS
            print(f"best: {best['images_per_s']:.1f} img/s = {best['tflops']:.1f} TFLOP/s ({share:.1f}% of the "
                  f"H200's ~{H200_BF16_TFLOPS:.0f} bf16 TFLOP/s)")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(dict(device=str(device), hardware=hardware, torch=torch.__version__,
                           threads=torch.get_num_threads(), baseline=args.baseline, rows=rows), f, indent=2)
    if ratios:
        print(f"time ours / {args.baseline} (best row of each group; <= 0.8 is the issue-13 goal): "
              + ", ".join(f"{res}x{res} batch {batch}: {ratio:.3f}" for res, batch, ratio in ratios))


if __name__ == "__main__":
    run_script(main)
