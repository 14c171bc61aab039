# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Markdown tables from the result JSON files, for docs/evaluation.md (no number is typed by hand).

    python -m benchmarks.tables simulation                      # benchmarks/results/simulation.json
    python -m benchmarks.tables real_images [surrogate]         # benchmarks/results/real_images_<enc>.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR

__all__ = ["simulation_tables", "real_images_tables", "main"]

_NAMES = {"tanl": "TANL", "neglabel": "NegLabel", "mcm": "MCM", "adaneg": "AdaNeg", "knn": "kNN (image emb.)"}


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def simulation_tables(res: dict[str, Any]) -> str:
    out = []
    st = res["stream"]
    out.append(f"Stream: {st['n_id']} ID + {st['n_ood']} OOD images (half far, half near-ID; "
               f"{st['ood_concepts']['far']} far + {st['ood_concepts']['near']} near-ID concepts), batch "
               f"{st['batch_size']}; {st['true_ood_words']} corpus words describe the stream's OOD concepts "
               f"(base rate {100 * st['base_rate']:.2f} % of the corpus).\n")
    out.append("| Method | AUROC all | FPR95 ID+ (%) | FPR95 OOD+ (%) | AUROC far | AUROC near-ID | seeds |")
    out.append("|---|---|---|---|---|---|---|")
    for k, e in res["a_b_main"].items():
        p0 = e["per_seed"][0]
        sd = e["std"]["auroc"]
        auroc = _f(e["mean"]["auroc"]) + (f" ± {sd:.3f}" if len(e["per_seed"]) > 1 else "")
        out.append(f"| {_NAMES[k]} | {auroc} | {_pct(e['mean']['fpr95_id_positive'])} | "
                   f"{_pct(e['mean']['fpr95_ood_positive'])} | {_f(p0['far']['auroc'])} | {_f(p0['near']['auroc'])} | "
                   f"{len(e['per_seed'])} |")
    t0 = res["a_b_main"]["tanl"]["per_seed"][0]
    out.append("\nSelected negatives against the words of the stream's OOD concepts (precision@k; seed 0):\n")
    out.append("| Selection | p@20 | p@100 | p@1000 |")
    out.append("|---|---|---|---|")
    for lab, d in (("TANL at reset (noise images only)", t0["selection_initial"]),
                   ("TANL, mean over the stream's batches", t0["selection_mean_over_batches"]),
                   ("TANL, after the last batch", t0["selection_final"]),
                   (f"NegLabel static (farthest {res['neglabel_config']['n_negatives']})",
                    res["a_b_main"]["neglabel"]["static_selection"])):
        out.append(f"| {lab} | {_f(d.get('p@20'), 2)} | {_f(d.get('p@100'), 2)} | {_f(d.get('p@1000'), 2)} |")
    out.append(f"\nTANL's final top-M holds {100 * t0['true_words_recalled_in_top_m']:.0f} % of the true OOD words; "
               f"{100 * t0['synonym_share_final']:.1f} % of it are synonyms of ID classes.\n")
    sw = res["c_m_sweep"]
    ms = sorted({e["m"] for v in sw.values() for e in v})
    out.append("AUROC against the number of negatives M (same stream, seed 0):\n")
    out.append("| M | " + " | ".join(str(m) for m in ms) + " |")
    out.append("|---|" + "---|" * len(ms))
    for key, lab in (("tanl", "TANL (activation-aware score)"), ("tanl_score_step0", "TANL selection, one softmax"),
                     ("neglabel", "NegLabel (M farthest)")):
        by = {e["m"]: e for e in sw[key]}
        out.append(f"| {lab} | " + " | ".join(_f(by[m]["auroc"]) if m in by else "" for m in ms) + " |")
    out.append("\nStream order (FPR95 in %, OOD-positive convention as in the paper's Table A16):\n")
    out.append("| Method | random (mean of seeds) | ID first | OOD first |")
    out.append("|---|---|---|---|")
    for k in ("tanl", "adaneg"):
        o = res["d_orders"][k]
        out.append(f"| {_NAMES[k]} | {_f(o['random']['auroc'])} / {_pct(o['random']['fpr95_ood_positive'])} | "
                   f"{_f(o['id_first']['auroc'])} / {_pct(o['id_first']['fpr95_ood_positive'])} | "
                   f"{_f(o['ood_first']['auroc'])} / {_pct(o['ood_first']['fpr95_ood_positive'])} |")
    out.append("\n(cells: AUROC / FPR95 OOD+ %; NegLabel and MCM are stateless and order-independent.)\n")
    sh = res["e_shift"]
    out.append(f"Mid-stream shift (mix A -> disjoint mix B at batch {sh['shift_at_batch']}):\n")
    out.append("| Method | AUROC before | AUROC after | FPR95 ID+ before (%) | FPR95 ID+ after (%) |")
    out.append("|---|---|---|---|---|")
    for k in ("tanl", "neglabel", "adaneg"):
        ph = sh[k]["phases"]
        out.append(f"| {_NAMES[k]} | {_f(ph['before']['auroc'])} | {_f(ph['after']['auroc'])} | "
                   f"{_pct(ph['before']['fpr95_id_positive'])} | {_pct(ph['after']['fpr95_id_positive'])} |")
    tr = sh["tanl"]["trace"]
    after = [t for t in tr if t["batch"] >= sh["shift_at_batch"]]
    before = [t for t in tr if t["batch"] < sh["shift_at_batch"]]
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    out.append(f"\nTANL's top-100: {mean([t['p@100_A'] for t in before[-3:]]):.2f} words of A / "
               f"{mean([t['p@100_B'] for t in before[-3:]]):.2f} of B over the 3 batches before the shift; "
               f"{mean([t['p@100_A'] for t in after[-3:]]):.2f} / {mean([t['p@100_B'] for t in after[-3:]]):.2f} over "
               f"the last 3; B dominates the top-100 {sh['tanl']['batches_until_B_dominates_top100']} batches after "
               f"the shift. Mean churn of the top-M per batch: {mean([t['churn'] for t in tr[1:]]):.2f}.\n")
    return "\n".join(out)


def real_images_tables(res: dict[str, Any]) -> str:
    out = []
    if res.get("warning"):
        out.append(f"> {res['warning']}\n")
    c = res["counts"]
    out.append(f"Encoder `{res['encoder']}`, corpus {res['corpus']['spec']} ({res['corpus']['n_labels']} labels), "
               f"ID labels {res['id_labels']}.\n")
    out.append("| Tier | images | sources | groups |")
    out.append("|---|---|---|---|")
    for t, v in c.items():
        if v["images"]:
            groups = ", ".join(f"{g} {n}" for g, n in v["groups"].items())
            out.append(f"| {t} | {v['images']} | {v['sources']} | {groups} |")
    out.append(f"\nID volumes (slices): {', '.join(f'{k} {v}' for k, v in res['id_volumes'].items())}.\n")
    tiers = [t for t in c if t != "id" and c[t]["images"]]
    for setting, entries in res["results"].items():
        out.append(f"**ID anchors: {setting}** (random order; AUROC / FPR95 ID-positive % / FPR95 OOD-positive %)\n")
        out.append("| Method | all OOD | " + " | ".join(tiers) + " |")
        out.append("|---|---|" + "---|" * len(tiers))
        for m, by_order in entries.items():
            tm = by_order["random"]["tiers"]
            cells = [f"{_f(tm[t]['auroc'])} / {_pct(tm[t]['fpr95_id_positive'])} / {_pct(tm[t]['fpr95_ood_positive'])}"
                     if t in tm else "–" for t in ["all", *tiers]]
            out.append(f"| {_NAMES.get(m, m)} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("**Stream order** (all OOD; AUROC / FPR95 ID+ %):\n")
    out.append("| Anchors | Method | random | ID first | OOD first |")
    out.append("|---|---|---|---|---|")
    for setting, entries in res["results"].items():
        for m in ("tanl", "adaneg"):
            if m in entries:
                cells = [f"{_f(entries[m][o]['tiers']['all']['auroc'])} / "
                         f"{_pct(entries[m][o]['tiers']['all']['fpr95_id_positive'])}" if o in entries[m] else "–"
                         for o in ("random", "id_first", "ood_first")]
                out.append(f"| {setting} | {_NAMES[m]} | " + " | ".join(cells) + " |")
    e = res["results"].get("text+image", {}).get("tanl", {}).get("random")
    if e:
        out.append("\nTANL, text + image anchors, at the threshold accepting 95 % of the ID slices "
                   f"({e['threshold_95_id']:.3f}); LOVO scores each OOD image once per fold, so counts are "
                   "images x folds:\n")
        out.append("| OOD group | rejected |")
        out.append("|---|---|")
        for g, v in e["group_rejections"].items():
            out.append(f"| {g} | {v} |")
        out.append("\n| ID volume | accepted |")
        out.append("|---|---|")
        for v, a in e["volume_acceptance"].items():
            out.append(f"| {v} | {a} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    which = argv[0] if argv else "simulation"
    if which == "simulation":
        print(simulation_tables(json.loads((RESULTS_DIR / "simulation.json").read_text())))
    else:
        slug = argv[1] if len(argv) > 1 else "surrogate"
        path = Path(slug) if slug.endswith(".json") else RESULTS_DIR / f"real_images_{slug}.json"
        print(real_images_tables(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
