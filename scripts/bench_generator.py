#!/usr/bin/env python
"""Benchmark our StyleGAN2 generator: images/s, ms/image, achieved TFLOP/s and peak memory, random weights.

Configurations: 256x256 (channel_base 16384) and 1024x1024 config-F (channel_base 32768, 8 mapping layers); any
batch sizes; fused vs non-fused modulated convolution; and, for GPUs (issue 3), reference ops vs our CUDA kernels,
precisions (below), channels_last half-precision blocks, eager vs CUDA graphs vs torch.compile. Each row prints
its speed ratio against the first row of its (resolution, batch) group, measured in the same process, and the
largest output difference against fp32.

    python scripts/bench_generator.py                                  # the CPU table in BENCHMARKS.md
    python scripts/bench_generator.py --batches 1 8 32 --impls ref cuda --precisions fp32 tf32 fp16 bf16 \\
        --modes eager graphs --modconv fused --epilogue fused separate --channels-last both --json gpu.json

Precisions: fp32 (exact: TF32 tensor cores off), tf32 (float32 storage, TF32 convolutions and matmuls),
fp16 (the official fp16 blocks on every resolution, conv_clamp 256), bf16 (the same blocks in bfloat16:
half_dtype=torch.bfloat16; mapping, styles and demodulation stay float32) and bf16-autocast (torch.autocast
around the whole float32 generator, for comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import time

import torch

from stylegan_disentangle.networks import Generator
from stylegan_disentangle.networks.checks import fast_path
from stylegan_disentangle.utils import atomic_write, resolve_device

H200_BF16_TFLOPS = 790.0  # measured dense bf16 rate of the lent H200 (device tool notes)
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "bf16-autocast")
HALF_BLOCK_PRECISIONS = ("fp16", "bf16")


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for float32 convolutions and matmuls (on by default for cuDNN convolutions in torch)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def generator_kwargs(res: int, precision: str, channels_last: bool) -> dict:
    base = 16384 if res <= 256 else 32768
    synthesis = dict(channel_base=base, channel_max=512)
    if precision in HALF_BLOCK_PRECISIONS:
        synthesis.update(num_fp16_res=int(math.log2(res)), conv_clamp=256, fp16_channels_last=channels_last)
    return dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                mapping_kwargs=dict(num_layers=8), synthesis_kwargs=synthesis)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_call(G: Generator, z: torch.Tensor, precision: str, fused: bool, mode: str):
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


def time_call(call, reps: int, device: torch.device) -> float:
    """Median seconds of one call (after one warm-up call)."""
    times = []
    for i in range(reps + 1):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def count_flops(G: Generator, device: torch.device) -> float:
    """FLOPs of one image (mapping + synthesis, non-fused modconv, fp32), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    z = torch.randn([1, G.z_dim], device=device)
    with FlopCounterMode(display=False) as counter:
        G(z, None, noise_mode="const", fused_modconv=False, force_fp32=True)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024], choices=[256, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--impls", nargs="+", default=["ref"], choices=["ref", "cuda"],
                        help="pure-PyTorch reference ops or our CUDA kernels (CUDA devices only)")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=["eager", "graphs", "compile"])
    parser.add_argument("--modconv", nargs="+", default=["non-fused", "fused"], choices=["non-fused", "fused"])
    parser.add_argument("--epilogue", nargs="+", default=["fused"], choices=["fused", "separate"],
                        help="with --impls cuda: the one-pass modconv epilogue kernel, or bias_act after addcmul")
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="off",
                        help="channels_last memory format in the fp16 blocks")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per row (median is reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (TFLOP/s column)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    hardware = torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "cpu"
    print(f"device={device} ({hardware}), torch {torch.__version__}, threads={torch.get_num_threads()}")
    print(f"{'res':>5} {'batch':>5} {'impl':>4} {'prec':>13} {'cl':>3} {'mode':>7} {'modconv':>9} {'epilogue':>8} "
          f"{'img/s':>9} {'ms/img':>9} {'TFLOP/s':>8} {'peak GiB':>8} {'max|d| fp32':>11} {'vs first':>8}")
    channels_last_options = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]
    rows = []
    for res in args.resolutions:
        torch.manual_seed(0)
        reference = Generator(**generator_kwargs(res, "fp32", False)).eval().requires_grad_(False).to(device)
        flops = None if args.no_flops else count_flops(reference, device)
        for batch in args.batches:
            z = torch.randn([batch, reference.z_dim], device=device)
            set_tf32(False)
            with torch.no_grad(), fast_path():
                expected = reference(z[:1], None, noise_mode="const", force_fp32=True)
            baseline = None
            for impl, precision, cl, mode, modconv, epilogue in itertools.product(
                    args.impls, args.precisions, channels_last_options, args.modes, args.modconv, args.epilogue):
                if (impl == "cuda" or mode == "graphs") and not on_cuda:
                    continue
                if cl and precision not in HALF_BLOCK_PRECISIONS:
                    continue
                if impl == "ref" and epilogue != args.epilogue[0]:
                    continue  # the reference path has one epilogue only
                os.environ["STYLEGAN_DISENTANGLE_FUSED_EPILOGUE"] = "1" if epilogue == "fused" else "0"
                set_tf32(precision == "tf32")
                os.environ["STYLEGAN_DISENTANGLE_REFERENCE_OPS"] = "1" if impl == "ref" else "0"
                G = Generator(**generator_kwargs(res, precision, cl)).eval().requires_grad_(False)
                G.load_state_dict(reference.state_dict())
                G = G.to(device)
                with torch.no_grad(), fast_path():
                    call = make_call(G, z, precision, modconv == "fused", mode)
                    if on_cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    seconds = time_call(call, args.reps, device)
                    first = make_call(G, z[:1], precision, modconv == "fused", "eager")()
                max_diff = float((first.float() - expected).abs().max())
                baseline = baseline or seconds
                row = dict(resolution=res, batch=batch, impl=impl, precision=precision, channels_last=cl, mode=mode,
                           modconv=modconv, epilogue=epilogue if impl == "cuda" else "ref",
                           images_per_s=batch / seconds, ms_per_image=1000 * seconds / batch,
                           flops_per_image=flops, tflops=(flops * batch / seconds / 1e12) if flops else None,
                           peak_gib=(torch.cuda.max_memory_allocated(device) / 2**30) if on_cuda else None,
                           max_abs_diff_vs_fp32=max_diff, speedup_vs_first=baseline / seconds)
                rows.append(row)
                tflops = f"{row['tflops']:.3f}" if row["tflops"] is not None else "-"
                peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "-"
                print(f"{res:>5} {batch:>5} {impl:>4} {precision:>13} {'y' if cl else 'n':>3} {mode:>7} "
                      f"{modconv:>9} {row['epilogue']:>8} {row['images_per_s']:>9.3f} {row['ms_per_image']:>9.1f} "
                      f"{tflops:>8} "
                      f"{peak:>8} {max_diff:>11.2e} {row['speedup_vs_first']:>7.2f}x", flush=True)
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
                           threads=torch.get_num_threads(), rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
