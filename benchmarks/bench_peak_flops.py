"""Inference speed against the physical limit: this machine's peak fp32 matmul rate.

    flock /tmp/cpu.lock python benchmarks/bench_peak_flops.py [--archs resnet18,resnet50,...]
        [--batches 2] [--repeats 3] [--try-compile]

1. Peak: best of several large square fp32 ``torch.matmul`` (``2 n^3`` FLOPs each).
2. Per model at 224 px: FLOPs of one image counted by ``torch.utils.flop_counter``
   (2 FLOPs per multiply-accumulate), then images/s of the forward pass as
   ``transferscope.engine.predict`` runs it (eval, ``inference_mode``, channels-last,
   ``batch_size``), next to the variants tried (plain NCHW ``no_grad``, batch sizes,
   bfloat16 autocast, optionally ``torch.compile``).
3. Fraction of the FLOP-bound limit = GFLOPs/image x images/s / peak GFLOP/s, all measured
   in this one run. The peak is the best of torch.matmul at three sizes and a large GEMM
   run by oneDNN (a 1x1 convolution), since MKL's matmul alone can be slower than the
   convolution kernels on the same cores. bf16 rows count the same FLOPs against the fp32
   peak (so they can exceed 100 %).

ResNets use random weights (no download here); efficientnet_lite0 its real ImageNet weights.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from transferscope.engine.inference import forward_batch
from transferscope.models import create_model


def _best_rate(fn, flops: float, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()  # a GPU's kernels are asynchronous: time them finished
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def peak_matmul(n: int, repeats: int, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of ``(n, n) @ (n, n)`` in ``dtype`` on ``device`` over ``repeats`` timed
    calls (TF32 on GPUs as ``torch.backends.cuda.matmul.allow_tf32`` says)."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    return _best_rate(lambda: torch.matmul(a, b), 2 * n ** 3, repeats, sync)


def peak_gemm_conv(repeats: int) -> float:
    """fp32 GFLOP/s of a large GEMM run by oneDNN: a 1x1 convolution, channels-last
    (N*H*W = 25088 rows, 1024 x 1024) - the kernel family the CNNs' convolutions use."""
    x = torch.randn(32, 1024, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1024, 1024, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return _best_rate(lambda: torch.nn.functional.conv2d(x, w), 2 * 32 * 28 * 28 * 1024 ** 2,
                          repeats)


def gflops_per_image(model, size: int) -> float:
    """Forward GFLOPs of one ``(1, 3, size, size)`` image (2 FLOPs per MAC)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def images_per_s(run, x: torch.Tensor, batches: int, repeats: int) -> float:
    """Best over ``repeats`` of ``batches`` calls of ``run(x)`` (after one warm-up call)."""
    run(x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            run(x)
        best = min(best, time.perf_counter() - t0)
    return batches * len(x) / best


def variants(model, args):
    """name -> (callable on a batch, batch size, whether the weights go channels-last)."""
    bs = args.batch_size

    def plain(x):  # what a user would write: NCHW, no_grad
        with torch.no_grad():
            return model(x)

    def engine(x, cl=True):  # transferscope.engine.predict's forward
        return forward_batch(model, x, channels_last=cl)

    def bf16(x):  # predict(..., precision="bf16")
        return forward_batch(model, x, channels_last=True, precision="bf16")

    out = {"plain NCHW no_grad": (plain, bs, False),
           "engine, NCHW (channels_last=False)": (lambda x: engine(x, False), bs, False),
           "engine default (inference_mode + channels-last)": (engine, bs, True),
           f"engine, batch {bs // 2}": (engine, bs // 2, True),
           f"engine, batch {bs * 2}": (engine, bs * 2, True),
           "engine, precision='bf16' (autocast; other numbers)": (bf16, bs, True)}
    if args.try_compile:
        compiled = torch.compile(model)

        def comp(x):
            with torch.inference_mode():
                return compiled(x.contiguous(memory_format=torch.channels_last))
        out["torch.compile + channels-last"] = (comp, bs, True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="resnet18,resnet50,efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=2, help="timed batches per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul-n", type=int, default=4096)
    ap.add_argument("--try-compile", action="store_true", help="also time torch.compile")
    args = ap.parse_args()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    rates = {f"torch.matmul {n}^2": peak_matmul(n, 5) for n in (1024, 2048, args.matmul_n)}
    rates["oneDNN 1x1 conv GEMM 25088x1024x1024"] = peak_gemm_conv(5)
    peak = max(rates.values())
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs")
    for name, r in rates.items():
        print(f"  fp32 {name:<40} {r:7.1f} GFLOP/s (best of 5)")
    print(f"peak fp32 rate (best of the above): {peak:.1f} GFLOP/s\n")
    print(f"{'model':<20}{'variant':<52}{'img/s':>8}{'GFLOP/s':>9}{'of peak':>9}")
    for arch in args.archs.split(","):
        init = "imagenet" if arch.startswith("efficientnet") else None
        model = create_model(arch, 1000, **({"init": init} if init else {})).eval()
        gf = gflops_per_image(model, args.size)
        print(f"{arch:<20}{f'{gf:.3f} GFLOPs/image (2 per MAC)':<52}")
        for name, (run, bs, cl) in variants(model, args).items():
            x = torch.randn(bs, 3, args.size, args.size)
            model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            ips = images_per_s(run, x, args.batches, args.repeats)
            print(f"{'':<20}{name:<52}{ips:8.2f}{gf * ips:9.1f}{gf * ips / peak:9.1%}")
        x = torch.randn(args.batch_size, 3, args.size, args.size)
        ref = forward_batch(model, x)
        low = forward_batch(model, x, precision="bf16")
        print(f"{'':<20}bf16 vs fp32 logits: max |diff| {(low - ref).abs().max():.3g} "
              f"(logit range {ref.abs().max():.3g}), same top-1 on "
              f"{(low.argmax(1) == ref.argmax(1)).float().mean():.0%} of the batch")


if __name__ == "__main__":
    main()
