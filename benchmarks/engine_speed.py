# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Speed and memory of TANLDetector at ImageNet scale, beside the unavoidable floor.

Data: random unit-norm embeddings (C ID labels, N corpus labels, D dims) and batches drawn around the ID labels
with noise; timing does not depend on the values. The floor is the one product every method needs:
``(kappa * V) @ [T_id; T_cor].T`` plus the softmax over its C + N columns.

    python benchmarks/engine_speed.py                 # C=1000, N=70000, D=512, B=256, M=1000, L=300
    python benchmarks/engine_speed.py --small         # a quick run (C=100, N=5000)
    python benchmarks/engine_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from tanl_guard import TANLConfig, TANLDetector


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved_medians(fns, device, repeats, warmup) -> list[float]:
    """Median time of each function, run alternately so that machine load hits all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            t = time.perf_counter()
            fn()
            _sync(device)
            bucket.append(time.perf_counter() - t)
    return [statistics.median(bucket) for bucket in times]


def run(n_id: int, n_corpus: int, dim: int, batch: int, repeats: int, warmup: int, device: str) -> dict:
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize
    id_text = unit(torch.randn(n_id, dim, generator=g), dim=1).to(dev)
    corpus = unit(torch.randn(n_corpus, dim, generator=g), dim=1).to(dev)
    noise = unit(torch.randn(15, dim, generator=g), dim=1).to(dev)
    batches = [
        unit(id_text[torch.randint(0, n_id, (batch,), generator=g).to(dev)] + 0.6 * torch.randn(batch, dim, generator=g).to(dev), dim=1)
        for _ in range(repeats + warmup)
    ]
    bank = torch.cat([id_text, corpus])
    kappa = 100.0

    def floor():
        torch.softmax((kappa * batches[0]) @ bank.T, dim=1)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        peak_supported = _reset_peak()
        base = _rss_kib("VmRSS") * 1024

    det = TANLDetector(id_text=id_text, corpus=corpus, logit_scale=kappa, config=TANLConfig())
    t = time.perf_counter()
    det.reset(noise_features=noise)
    _sync(dev)
    reset_s = time.perf_counter() - t

    it = iter(batches)
    step_s, floor_s = _interleaved_medians([lambda: det.step(next(it)), floor], dev, repeats, warmup)

    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = (_rss_kib("VmHWM") * 1024 - base) if peak_supported else float("nan")

    buffer = io.BytesIO()
    torch.save(det.state_dict(), buffer)
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "C": n_id, "N": n_corpus, "D": dim, "B": batch, "M": det.n_negatives, "L": det.config.queue_len,
        "floor_s": floor_s,
        "step_s": step_s,
        "step_over_floor": step_s / floor_s,
        "reset_s": reset_s,
        "state_bytes": buffer.tell(),
        "peak_bytes_above_inputs": peak,
        "queues": det.queue_sizes,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="C=100, N=5000: a quick run")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    n_id, n_corpus = (100, 5000) if args.small else (1000, 70000)
    result = run(n_id, n_corpus, 512, 256, args.repeats, args.warmup, args.device)
    mib = 1024 * 1024
    print(f"TANLDetector on {result['device']} ({result['machine']}, torch {result['torch']}), random embeddings")
    print(f"C={result['C']} N={result['N']} D={result['D']} B={result['B']} M={result['M']} L={result['L']}")
    print(f"| per batch (median of {args.repeats}) | floor: product + softmax | ratio | reset | state | peak memory above inputs |")
    print("|---|---|---|---|---|---|")
    print(f"| {result['step_s'] * 1000:.0f} ms | {result['floor_s'] * 1000:.0f} ms | {result['step_over_floor']:.2f}x "
          f"| {result['reset_s'] * 1000:.0f} ms | {result['state_bytes'] / mib:.2f} MiB "
          f"| {result['peak_bytes_above_inputs'] / mib:.0f} MiB |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
