# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Speed and memory of TANLDetector at ImageNet scale, beside the unavoidable floor.

Data: random unit-norm embeddings (C ID labels, N corpus labels, D dims) and batches drawn around the ID labels
with noise; timing does not depend on the values. The floor is the one product every method needs:
``(kappa * V) @ [T_id; T_cor].T`` plus the softmax over its C + N columns, on the same batch. Each repeat times
the detector's step and the floor back to back (in alternating order), so machine load hits both alike; the
figure of merit is the median of these per-batch ratios.

    python benchmarks/engine_speed.py                 # C=1000, N=70000, D=512, B=256, M=1000, L=300
    python benchmarks/engine_speed.py --sweep         # also B=32, and N=10000 (the fixed costs)
    python benchmarks/engine_speed.py --sweep --hogs 2   # the same beside 2 busy-looping processes (load +2)
    python benchmarks/engine_speed.py --small         # a quick run (C=100, N=5000)
    python benchmarks/engine_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from tanl_guard import TANLConfig, TANLDetector

__all__ = ["SWEEP", "run", "main"]

#: (B, N) of the sweep: the ImageNet setting, a small batch, a small corpus (C = 1000, D = 512 throughout).
SWEEP = ((256, 70000), (32, 70000), (256, 10000))


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


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _spin() -> None:  # a CPU hog: one busy core
    while True:
        pass


def _paired_times(step, floor, batches, device) -> tuple[list[float], list[float]]:
    """Time ``step(b)`` and ``floor(b)`` back to back on every batch, alternating which goes first."""
    floor(batches[0])  # the floor's first call pays for its lazy initialisation, as the step's warm-up did
    _sync(device)
    step_s, floor_s = [], []
    for i, b in enumerate(batches):
        pair = [(step, step_s), (floor, floor_s)]
        for fn, bucket in pair if i % 2 == 0 else pair[::-1]:
            t = time.perf_counter()
            fn(b)
            _sync(device)
            bucket.append(time.perf_counter() - t)
    return step_s, floor_s


def run(n_id: int, n_corpus: int, dim: int, batch: int, repeats: int, warmup: int, device: str) -> dict:
    """One configuration: per-batch step and floor times, reset time, state size and memory.

    Args:
        n_id: C, ID labels.
        n_corpus: N, corpus labels.
        dim: D, embedding dimension.
        batch: B, images per step.
        repeats: timed batches.
        warmup: untimed batches first (the queues fill and the buffers are allocated).
        device: "cpu", "cuda" or "cuda:N".
    """
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize
    id_text = unit(torch.randn(n_id, dim, generator=g), dim=1).to(dev)
    corpus = unit(torch.randn(n_corpus, dim, generator=g), dim=1).to(dev)
    noise = unit(torch.randn(15, dim, generator=g), dim=1).to(dev)
    batches = [
        unit(id_text[torch.randint(0, n_id, (batch,), generator=g).to(dev)]
             + 0.6 * torch.randn(batch, dim, generator=g).to(dev), dim=1)
        for _ in range(repeats + warmup)
    ]
    bank = torch.cat([id_text, corpus])
    kappa = 100.0

    def floor(v: torch.Tensor) -> None:
        torch.softmax((kappa * v) @ bank.T, dim=1)

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

    admitted = []

    def step(v: torch.Tensor) -> None:
        res = det.step(v)
        admitted.append(int(res.confident_id.sum()) + int(res.confident_ood.sum()))

    for b in batches[:warmup]:  # the engine alone: its buffers are allocated and its queues fill
        step(b)
    _sync(dev)
    if dev.type == "cuda":  # the engine's peak (reset and steps), before the floor allocates beside it
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = (_rss_kib("VmHWM") * 1024 - base) if peak_supported else float("nan")

    load_before = _load_average()
    step_s, floor_s = _paired_times(step, floor, batches[warmup:], dev)
    load_after = _load_average()
    workspace = getattr(det, "_workspace", None)  # the reused step buffers (absent before they existed)

    buffer = io.BytesIO()
    torch.save(det.state_dict(), buffer)
    ratios = [s / f for s, f in zip(step_s, floor_s)]
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "C": n_id, "N": n_corpus, "D": dim, "B": batch, "M": det.n_negatives, "L": det.config.queue_len,
        "repeats": repeats,
        "floor_s": statistics.median(floor_s),
        "step_s": statistics.median(step_s),
        "step_over_floor": statistics.median(ratios),
        "ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3,
        "images_per_s": batch / statistics.median(step_s),
        "floor_images_per_s": batch / statistics.median(floor_s),
        "admitted_per_batch": statistics.median(admitted[warmup:]),
        "reset_s": reset_s,
        "state_bytes": buffer.tell(),
        "buffer_bytes": workspace.nbytes if workspace is not None else 0,
        "peak_bytes_above_inputs": peak,  # reset plus the warm-up steps, without the floor
        "queues": det.queue_sizes,
        "load_average": [load_before, load_after],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--small", action="store_true", help="C=100, N=5000: a quick run")
    parser.add_argument("--sweep", action="store_true", help=f"run the (B, N) settings {SWEEP}")
    parser.add_argument("--batch", type=int, default=256, help="B, images per step")
    parser.add_argument("--n-corpus", type=int, default=70000, help="N, corpus labels")
    parser.add_argument("--n-id", type=int, default=1000, help="C, ID labels")
    parser.add_argument("--dim", type=int, default=512, help="D, embedding dimension")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=0, help="busy-looping processes to run beside the benchmark")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine (torch {torch.__version__})")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.small:
        settings = [(args.batch, 100, 5000)]
    elif args.sweep:
        settings = [(b, args.n_id, n) for b, n in SWEEP]
    else:
        settings = [(args.batch, args.n_id, args.n_corpus)]

    hogs = [multiprocessing.get_context("fork").Process(target=_spin, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    try:
        results = [run(c, n, args.dim, b, args.repeats, args.warmup, args.device) for b, c, n in settings]
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()

    mib = 1024 * 1024
    first = results[0]
    print(f"TANLDetector on {first['device']} ({first['machine']}, torch {first['torch']}), random embeddings, "
          f"{args.hogs} CPU hogs beside it")
    print(f"| C | N | D | B | per batch | floor: product + softmax | step / floor (median of {args.repeats} "
          "per-batch ratios) | images/s | reset | state | reused buffers | peak memory above inputs | load average |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['C']} | {r['N']} | {r['D']} | {r['B']} | {r['step_s'] * 1000:.1f} ms "
              f"| {r['floor_s'] * 1000:.1f} ms | **{r['step_over_floor']:.2f}x** | {r['images_per_s']:.0f} "
              f"| {r['reset_s'] * 1000:.0f} ms "
              f"| {r['state_bytes'] / mib:.2f} MiB | {r['buffer_bytes'] / mib:.0f} MiB "
              f"| {r['peak_bytes_above_inputs'] / mib:.0f} MiB "
              f"| {r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results if len(results) > 1 else first, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
