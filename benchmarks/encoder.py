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

from .real_images import build_parser, run_from_args

__all__ = ["main"]

COMMAND = "python -m benchmarks encoder"


def main(argv: list[str] | None = None) -> int:
    p = build_parser(COMMAND)
    for action in p._actions:
        if action.dest == "encoder":
            action.required = True
            action.default = None
    run_from_args(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
