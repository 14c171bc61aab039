# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Controls for the real-image evaluation: the same harness with random-weight encoders, seeded and repeated.

If a random network of the encoder's architecture separates the ID slices from the OOD images about as well as the
trained encoder, the harness measures low-level image statistics (grey level, texture, field of view), not what the
encoder knows. Each draw builds ``open_clip:ARCH:random`` with torch's generator seeded (open_clip draws its
initial weights from the global generator, which the product leaves unseeded), so draw ``s`` is the same network on
every machine; its weights' SHA-256 is recorded. Every encoder, the trained one included, uses the same corpus (a
seeded random subset of WordNet: a random text tower embeds 70,000 words slowly on a CPU) and the ``all_ood``
streams with the product's two policies.

    python -m benchmarks controls                              # surrogate + 5 random ViT-B-32 draws
    python -m benchmarks controls --draws 5 --arch ViT-B-16 --corpus-limit 1000

Writes ``benchmarks/results/real_images_controls.json`` (per-run files under ``benchmarks/results/raw/``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from .common import RESULTS_DIR, environment, write_json
from .real_images import run

__all__ = ["seeded_encoder", "run_controls", "main"]

COMMAND = "python -m benchmarks controls"


def seeded_encoder(spec: str, seed: int, device: str = "cpu", **kwargs: Any) -> Any:
    """``tanl_guard.encoders.resolve(spec)`` with torch's global generator seeded for the model's construction
    (and restored afterwards), the seed appended to the encoder id.

    Args:
        spec: an encoder spec, typically ``open_clip:ARCH:random``.
        seed: the seed.
        device: where the encoder runs.
        **kwargs: passed to ``resolve``.
    """
    from tanl_guard.encoders import resolve

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        encoder = resolve(spec, device=device, **kwargs)
    finally:
        torch.random.set_rng_state(state)
    encoder.id = f"{spec}#seed{seed}"
    return encoder


def _auroc_all(payload: dict[str, Any]) -> dict[str, list[float]]:
    return {m: e["separation"]["all"]["auroc"] for m, e in payload["results"].items() if "separation" in e}


def run_controls(draws: int = 5, arch: str = "ViT-B-32", corpus_limit: int = 1000, trained: str = "surrogate",
                 device: str = "cpu", methods: tuple[str, ...] = ("tanl", "neglabel", "mcm", "adaneg"),
                 n_boot: int = 2000, threads: int | None = 2, verbose: bool = True) -> dict[str, Any]:
    """The trained encoder and ``draws`` random-weight encoders through the same harness and corpus.

    Args:
        draws: random-weight draws (seeds 0 .. draws-1).
        arch: open_clip architecture of the random encoders.
        corpus_limit: size of the seeded WordNet subset every encoder uses.
        trained: the trained encoder's spec (its runs also include the thumbnail floor).
        device: where encoders run.
        methods: Guard detector names.
        n_boot: bootstrap replicates.
        threads: torch threads.
        verbose: print progress.
    """
    t0 = time.perf_counter()
    common = dict(corpus_spec="wordnet", corpus_limit=corpus_limit, policies=("adaptive", "calibrated"),
                  stream_kinds=("all_ood",), n_boot=n_boot, figures=False, threads=threads, verbose=verbose)
    runs: dict[str, Any] = {}
    raw = RESULTS_DIR / "raw"
    trained_run = run(encoder_spec=trained, device=device, methods=(*methods, "thumbnail"),
                      out=str(raw / "controls_trained.json"), **common)
    runs[trained_run["encoder"]] = trained_run
    random_runs = []
    for seed in range(draws):
        spec = f"open_clip:{arch}:random"
        encoder = seeded_encoder(spec, seed, device)
        r = run(encoder=encoder, methods=methods, out=str(raw / f"controls_random_{arch}_{seed}.json"), **common)
        r["seed"] = seed
        runs[r["encoder"]] = r
        random_runs.append(r)
    across: dict[str, Any] = {}
    for m in methods:
        vals = np.array([_auroc_all(r)[m][0] for r in random_runs])
        across[m] = {"auroc_mean": round(float(vals.mean()), 4), "auroc_min": round(float(vals.min()), 4),
                     "auroc_max": round(float(vals.max()), 4), "draws": len(vals)}
    payload = {
        "benchmark": "real_images_controls",
        "corpus": trained_run["corpus"],
        "note": "every encoder uses the same corpus subset and streams; random draws use torch.manual_seed(seed) "
                "around open_clip's model creation",
        "random_arch": arch,
        "runs": {
            enc: {
                "weights_sha256": r["encoder_weights_sha256"],
                "separation_all": {m: e["separation"]["all"] for m, e in r["results"].items()},
                "separation_by_tier_auroc": {m: {t: v["auroc"] for t, v in e["separation"].items()}
                                             for m, e in r["results"].items()},
                "decisions_all_ood": {m: {p: {k: d["all_ood"][k] for k in ("id_acceptance", "ood_rejection")}
                                          for p, d in e["decisions"].items()} for m, e in r["results"].items()},
                "corpus_labels_after_guard_filters": r["corpus"]["labels_after_guard_filters"],
                "encode_s": r["timings_s"].get("encode_s"),
            }
            for enc, r in runs.items()
        },
        "random_draws_auroc_all": across,
        "seconds_total": round(time.perf_counter() - t0, 1),
        "environment": environment(),
    }
    write_json(RESULTS_DIR / "real_images_controls.json", payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--arch", default="ViT-B-32")
    p.add_argument("--corpus-limit", type=int, default=1000)
    p.add_argument("--trained", default="surrogate", help="the trained encoder's spec")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    run_controls(a.draws, a.arch, a.corpus_limit, a.trained, a.device, n_boot=a.bootstrap, threads=a.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
