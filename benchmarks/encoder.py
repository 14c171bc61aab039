# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The real-image harness with a real BiomedCLIP / CLIP encoder and (usually) your own ID / OOD folders.

Identical to ``python -m benchmarks real_images`` except that ``--encoder`` is required, so a run can never fall
back to the surrogate by accident. Results go to ``benchmarks/results/real_images_<encoder>[_user].json`` in the
same format; figures to ``docs/figures/real_*_<encoder>.png``.

    python -m benchmarks encoder --encoder biomedclip --device cuda \\
        --id-dir /data/brain_mri --ood-dir CT=/data/ct --ood-dir photos=/data/photos --id-label "brain MRI"
    python -m benchmarks encoder --encoder open_clip:ViT-B-16:/weights/vit_b16.pt      # Track A images

Weights are never downloaded by the benchmark: BiomedCLIP comes from the Hugging Face cache or
``biomedclip:local-dir:PATH``; open_clip from a local checkpoint (see docs/evaluation.md).
"""

from __future__ import annotations

from .real_images import build_parser, run

__all__ = ["main"]

COMMAND = "python -m benchmarks encoder"


def main(argv: list[str] | None = None) -> int:
    p = build_parser(COMMAND)
    for action in p._actions:
        if action.dest == "encoder":
            action.required = True
            action.default = None
    a = p.parse_args(argv)
    run(
        encoder_spec=a.encoder, device=a.device, corpus_spec=a.corpus, corpus_limit=a.corpus_limit,
        id_labels=tuple(a.id_label or ("brain MRI",)), id_dir=a.id_dir, ood_dirs=a.ood_dir,
        slices_per_volume=a.slices_per_volume, batch_size=a.batch_size, cache_dir=a.cache_dir,
        fetch=not a.no_fetch, figures=not a.no_figures, out=a.out, threads=a.threads,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
