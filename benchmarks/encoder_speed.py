# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Image-encoding speed of an encoder in several precisions: images/s through ``encode_images``.

Precisions: ``fp32``; ``amp_fp16`` / ``amp_bf16`` (float32 weights, the calls under ``torch.autocast``: mixed
precision); any other open_clip precision (``fp16``, ``bf16``: weights converted by open_clip) is passed to it.

Data: random (B, 3, S, S) images in [0, 1] already on the device, S the encoder's input size, so the figure is
the encoder's (resize, normalisation, forward pass, L2 normalisation) without decoding. Speed does not depend on
the weights, so ``open_clip:ViT-B-16:random`` (random weights, nothing downloaded) stands for CLIP ViT-B/16 and
BiomedCLIP's image tower.

    python benchmarks/encoder_speed.py --device cuda                          # ViT-B-16 in five precisions
    python benchmarks/encoder_speed.py --device cpu --batch 4 --iters 2 --precision fp32   # a quick CPU run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch

__all__ = ["AUTOCAST", "run", "main"]

#: precisions run as float32 weights under torch.autocast with this dtype
AUTOCAST = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(spec: str, device: str, precision: str, batch: int, iters: int, warmup: int) -> dict:
    """Images/s of ``encode_images`` for one precision.

    Args:
        spec: encoder spec (see :func:`tanl_guard.encoders.resolve`); open_clip specs take ``precision``.
        device: "cpu", "cuda" or "cuda:N".
        precision: "amp_fp16" / "amp_bf16" (autocast), or an open_clip precision ("fp32", "fp16", "bf16", ...).
        batch: images per call (also the encoder's batch size).
        iters: timed calls.
        warmup: untimed calls first.
    """
    from tanl_guard.encoders import resolve

    dev = torch.device(device)
    t = time.perf_counter()
    weights = "fp32" if precision in AUTOCAST else precision
    kwargs = {"precision": weights} if spec.startswith("open_clip:") else {}
    encoder = resolve(spec, device=device, batch_size=batch, **kwargs)
    load_s = time.perf_counter() - t
    size = encoder.preprocess.size
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def encode() -> torch.Tensor:
        amp = torch.autocast(dev.type, dtype=AUTOCAST[precision]) if precision in AUTOCAST else contextlib.nullcontext()
        with amp:
            return encoder.encode_images(images)

    for _ in range(warmup):
        encode()
    _sync(dev)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        out = encode()
        _sync(dev)
        times.append(time.perf_counter() - t)
    assert out.shape == (batch, encoder.embed_dim) and bool(torch.isfinite(out).all())
    per_batch = statistics.median(times)
    return {
        "encoder": spec, "precision": precision, "model_dtype": str(next(encoder.model.parameters()).dtype)
        if hasattr(encoder, "model") else "n/a",
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "torch": torch.__version__, "batch": batch, "input_size": size, "iters": iters,
        "per_batch_s": per_batch, "images_per_s": batch / per_batch, "load_s": load_s,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="open_clip:ViT-B-16:random", help="encoder spec")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", nargs="+", default=["fp32", "amp_fp16", "amp_bf16", "fp16", "bf16"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine (torch {torch.__version__})")
    if args.batch < 1 or args.iters < 1:
        parser.error("--batch and --iters must be positive")
    rows = []
    for precision in args.precision:
        try:
            rows.append(run(args.encoder, args.device, precision, args.batch, args.iters, args.warmup))
        except Exception as exc:  # one precision failing (unsupported on this device) must not hide the others
            rows.append({"encoder": args.encoder, "precision": precision, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            if torch.device(args.device).type == "cuda":
                torch.cuda.empty_cache()
    print(f"{args.encoder} on {args.device}, batches of {args.batch} random images")
    print("| precision | model dtype | images/s | per batch | load | peak GPU memory |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['precision']} | failed: {r['error']} | | | | |")
            continue
        peak = f"{r['peak_gpu_bytes'] / 2**30:.1f} GiB" if r["peak_gpu_bytes"] is not None else "n/a"
        print(f"| {r['precision']} | {r['model_dtype']} | **{r['images_per_s']:.3g}** "
              f"| {r['per_batch_s'] * 1000:.1f} ms | {r['load_s']:.1f} s | {peak} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if all("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
