# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Archive scale on Ray: embedding throughput with 1 and 2 encoder workers, and the gate's memory and checkpoint
size against the number of studies screened (they must stay flat).

A generated archive of small studies (as ``screen_e2e`` writes them: brain MR slabs cut from the MNI152 template
and scikit-image photos, all DICOM), the offline surrogate encoder, a local Ray instance on this machine
(``--cpus``), batches of ``--batch-size`` views. Three runs on the same archive:

1. ``--engine ray`` with 1 encoder worker, then 2 (fresh work directories): wall time, and the steady embedding
   rate (views between the first and the last shard written, over that time: actor start-up and weight loading
   excluded).
2. The gate alone: the same manifest with every shard already written (a fresh screening of the embedded archive):
   per-view cost of reading shards and judging, the driver's resident memory after every batch, and the size of the
   checkpoint after every checkpoint.

    nice -n 10 python benchmarks/ray_scale.py                     # 1000 studies, view mid: about 10 min loaded
    nice -n 10 python benchmarks/ray_scale.py --studies 3000 --json benchmarks/results/ray_scale.json

Ray listens on every interface of the machine; to keep it on loopback, run the benchmark in a network namespace:
``unshare -n sh -c 'ip link set lo up && nice -n 10 python benchmarks/ray_scale.py'`` (as root).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

CORPUS = ("teapot\ncat\ndog\nbicycle\ncar\nmountain\nbeach\nguitar\nbook\nbottle\nchest radiograph\nultrasound scan\n"
          "computed tomography\nbone scan\nfetus\nlung\nrib cage\nhand\nspine\nkeyboard\nclock\nchair\n")


def rss_mib() -> float:
    """This process's resident memory (MiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def screen_ray(folder: Path, guard, work: Path, args, workers: int, probe: bool = False) -> dict:
    """One ``--engine ray`` screening; with ``probe``, memory and checkpoint size after every batch."""
    from tanl_guard.integrations.ray import RayEngineConfig, RayScreener
    from tanl_guard.pipeline import ScreenConfig

    state = work / "state.pt"
    samples: list[tuple[int, float, int]] = []

    def on_batch(step: int) -> None:
        samples.append((step, rss_mib(), state.stat().st_size if state.exists() else 0))

    config = ScreenConfig(view=args.view, batch_size=args.batch_size, state_path=str(state),
                          checkpoint_every=args.checkpoint_every, work_dir=str(work / "work"))
    screener = RayScreener(guard, config, encoder_spec=args.encoder,
                           ray_config=RayEngineConfig(workers=workers, decode_cpus=0.25),
                           on_batch=on_batch if probe else None)
    start = time.perf_counter()
    report = screener.run(folder)
    wall = time.perf_counter() - start
    shards = sorted(p.stat().st_mtime for p in (work / "work" / "embeddings").glob("*/batch-*.parquet"))
    steady = None
    if screener.embedded_batches > 2 and shards[-1] > shards[0]:
        steady = report.views * (len(shards) - 1) / len(shards) / (shards[-1] - shards[0])
    row = {"workers": workers, "studies": len(report.studies), "views": report.views, "wall_s": wall,
           "views_per_s": report.views / wall, "steady_views_per_s": steady,
           "embedded_batches": screener.embedded_batches, **{f"{k}_s": v for k, v in report.seconds.items()},
           "stages": " | ".join(screener.job_plan)}
    if probe:
        row["samples"] = samples
        row["checkpoint_bytes"] = state.stat().st_size
        row["segments_bytes"] = sum(p.stat().st_size for p in (work / "work" / "segments").glob("*.jsonl"))
        row["manifest_bytes"] = sum(p.stat().st_size for p in (work / "work" / "manifest").iterdir())
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables (``measure`` returns the figures instead)."""
    measure(argv)
    return 0


def measure(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return its figures (and write them to ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--view", default="mid", help="mid: one view per study (small studies, many of them)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--checkpoint-every", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--encoder", default="surrogate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TANL_GUARD_SALT", "benchmark")

    try:
        from benchmarks.screen_e2e import generate_folder
    except ImportError:  # run as a script: its own folder is on the path
        from screen_e2e import generate_folder
    from tanl_guard.demo import ID_LABELS, build_demo_folder
    from tanl_guard.encoders import resolve
    from tanl_guard.guard import Guard
    from tanl_guard.integrations.ray import ray_session
    from tanl_guard.pipeline.references import load_reference_images

    result: dict = {"studies": args.studies, "view": args.view, "batch_size": args.batch_size,
                    "encoder": args.encoder, "cpus": args.cpus, "load_before": os.getloadavg()[0], "runs": []}
    with tempfile.TemporaryDirectory(prefix="tanl_guard_ray_scale_") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        folder = generate_folder(root / "archive", args.studies)
        result["generate_s"] = time.perf_counter() - t
        demo = build_demo_folder(root / "demo")
        references = load_reference_images(demo.references, list(ID_LABELS))
        corpus = root / "corpus.txt"
        corpus.write_text(CORPUS)
        encoder = resolve(args.encoder)

        def guard():
            return Guard.build(encoder=encoder, labels=ID_LABELS, reference_images=references, corpus=str(corpus),
                               cache_dir=str(root / "cache"))

        with ray_session(None, num_cpus=args.cpus):
            for workers in args.workers:
                run = screen_ray(folder, guard(), root / f"w{workers}", args, workers)
                result["runs"].append(run)
                print(json.dumps({k: v for k, v in run.items() if k != "samples"}), flush=True)
            # The gate alone: every shard is there, so nothing is embedded and the driver only reads and judges.
            work = root / f"w{args.workers[0]}"
            (work / "state.pt").unlink()
            gate = screen_ray(folder, guard(), work, args, args.workers[0], probe=True)
            result["gate_only"] = gate
    result["load_after"] = os.getloadavg()[0]
    gate = result["gate_only"]
    samples = gate["samples"]
    print(f"\nRay engine, {args.encoder}, {args.studies} generated studies, view {args.view}, batches of "
          f"{args.batch_size} views, local Ray with {args.cpus} CPUs (load {result['load_before']:.1f} before, "
          f"{result['load_after']:.1f} after)")
    print("| encoder workers | views | wall | views/s (wall) | views/s (steady, between first and last shard) |")
    print("|---|---|---|---|---|")
    for run in result["runs"]:
        steady = f"{run['steady_views_per_s']:.1f}" if run["steady_views_per_s"] else "-"
        print(f"| {run['workers']} | {run['views']} | {run['wall_s']:.0f} s | {run['views_per_s']:.1f} | {steady} |")
    per_view = (gate["gate_s"] + gate["ingest_s"]) / max(gate["views"], 1)
    print(f"\ngate alone (shards written): {gate['wall_s']:.1f} s for {gate['views']} views: judge "
          f"{gate['gate_s'] / max(gate['views'], 1) * 1e3:.2f} ms/view, shard reads "
          f"{gate['ingest_s'] / max(gate['views'], 1) * 1e3:.2f} ms/view ({per_view * 1e3:.2f} ms/view in all)")
    print("| studies screened | driver RSS | checkpoint |")
    print("|---|---|---|")
    for i in sorted({0, len(samples) // 4, len(samples) // 2, 3 * len(samples) // 4, len(samples) - 1}):
        step, rss, size = samples[i]
        print(f"| {step} | {rss:.0f} MiB | {size / 1024:.1f} KiB |")
    print(f"on disk, O(studies): manifest {gate['manifest_bytes'] / 1024:.0f} KiB, verdict segments "
          f"{gate['segments_bytes'] / 1024:.0f} KiB; checkpoint {gate['checkpoint_bytes'] / 1024:.1f} KiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
