# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Markdown tables from the result JSON files, for docs/evaluation.md (no number is typed by hand).

    python -m benchmarks.tables simulation                 # benchmarks/results/simulation.json (+ _calibration)
    python -m benchmarks.tables real_images [surrogate]    # benchmarks/results/real_images_<enc>.json
    python -m benchmarks.tables controls                   # benchmarks/results/real_images_controls.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR

__all__ = ["simulation_tables", "calibration_table", "real_images_tables", "controls_table", "main"]

_NAMES = {"tanl+knn": "TANL + kNN (shipped)", "tanl": "TANL", "knn": "kNN", "mahalanobis": "Mahalanobis",
          "neglabel": "NegLabel", "mcm": "MCM", "adaneg": "AdaNeg",
          "thumbnail_template": "32x32 thumbnail (floor)"}


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(v: Any, nd: int = 2) -> str:
    """``[value, low, high]`` as ``value [low, high]``."""
    if not v:
        return "–"
    return f"{v[0]:.{nd}f} [{v[1]:.{nd}f}, {v[2]:.{nd}f}]"


def _name(m: str) -> str:
    return _NAMES.get(m, m)


# ---------------------------------------------------------------------------------------------------- simulation


def calibration_table(cal: dict[str, Any]) -> str:
    best = cal["best"]
    out = ["Stage 1, far stream (FPR95 ID-positive %; paper NegLabel 25.4, MCM 43.9):\n",
           "| far_link | bg_link | NegLabel | MCM | NegLabel ahead | no baseline worse than paper | error |",
           "|---|---|---|---|---|---|---|"]
    for g in cal["stage1_far"]:
        mark = " **(chosen)**" if g["far_link"] == best["far_link"] and g["bg_link"] == best["bg_link"] else ""
        v = g["fpr95_id_positive"]
        out.append(f"| {g['far_link']} | {g['bg_link']} | {v['neglabel']:.1f} | {v['mcm']:.1f} | "
                   f"{'yes' if g['neglabel_ahead'] else 'no'} | {'yes' if g['baselines_no_worse_than_paper'] else 'no'} "
                   f"| {g['log_error']:.3f}{mark} |")
    out += ["\nStage 2, near-ID stream at the stage-1 point (FPR95 OOD-positive %; paper NegLabel 69.45, MCM 79.02):\n",
            "| near_link | NegLabel | MCM | NegLabel ahead | no baseline worse than paper | error |",
            "|---|---|---|---|---|---|"]
    for g in cal["stage2_near"]:
        mark = " **(chosen)**" if g["near_link"] == best["near_link"] else ""
        v = g["fpr95_ood_positive"]
        out.append(f"| {g['near_link']} | {v['neglabel']:.1f} | {v['mcm']:.1f} | {'yes' if g['neglabel_ahead'] else 'no'} "
                   f"| {'yes' if g['baselines_no_worse_than_paper'] else 'no'} | {g['log_error']:.3f}{mark} |")
    return "\n".join(out)


def _mean_sd(e: dict[str, Any], key: str = "auroc", pct: bool = False) -> str:
    v = e[key]
    scale = 100 if pct else 1
    nd = 1 if pct else 3
    return f"{scale * v['mean']:.{nd}f} ± {scale * v['std']:.{nd}f}"


def _comparison_rows(block: dict[str, Any]) -> list[str]:
    rows = []
    for m in ("tanl", "neglabel", "mcm", "adaneg"):
        e = block[m]
        pw = e["per_world"]
        far = [pw[w]["far"]["auroc"]["mean"] for w in pw if "far" in pw[w]]
        near = [pw[w]["near"]["auroc"]["mean"] for w in pw if "near" in pw[w]]
        runs = e["all"]["auroc"]["n"]
        rows.append(f"| {_name(m)} | {_mean_sd(e['all'])} | {_mean_sd(e['all'], 'fpr95_id_positive', True)} | "
                    f"{_mean_sd(e['all'], 'fpr95_ood_positive', True)} | "
                    f"{_f(sum(far) / len(far)) if far else '–'} | {_f(sum(near) / len(near)) if near else '–'} | {runs} |")
    return rows


def simulation_tables(res: dict[str, Any]) -> str:
    out = []
    cal = res["calibration_check"]
    out.append("**Calibration check** (every world seed; the baselines only):\n")
    out.append("| Stream | convention | NegLabel (per world) | MCM (per world) | paper NegLabel / MCM | NegLabel ahead |")
    out.append("|---|---|---|---|---|---|")
    for name, e in cal.items():
        out.append(f"| {name} | FPR95 {'ID+' if 'id_' in e['convention'] else 'OOD+'} | {e['neglabel']['mean']:.1f} "
                   f"({', '.join(f'{v:.1f}' for v in e['neglabel']['per_world'])}) | {e['mcm']['mean']:.1f} "
                   f"({', '.join(f'{v:.1f}' for v in e['mcm']['per_world'])}) | {e['neglabel']['paper']} / "
                   f"{e['mcm']['paper']} | {'yes' if e['neglabel_better_than_mcm'] else 'no'} |")
    seeds = res["seeds"]
    out.append(f"\n**Comparison** (world seeds {seeds['world']}; TANL and AdaNeg: order seeds {seeds['order']} in every "
               "world; mean ± standard deviation over all runs; far / near-ID columns: AUROC against that tier):\n")
    for name, block in res["comparison"].items():
        st = res["streams"][name]
        out.append(f"*{name}* stream ({st['n_id']} ID + {100 * st['ood_share']:.0f} % OOD from {st['far']} far and "
                   f"{st['near']} near-ID concepts):\n")
        out.append("| Method | AUROC | FPR95 ID+ (%) | FPR95 OOD+ (%) | AUROC far | AUROC near-ID | runs |")
        out.append("|---|---|---|---|---|---|---|")
        out += _comparison_rows(block)
        out.append("")
    out.append("**Selection** (TANL's activated negatives against the words of the stream's OOD concepts, world by "
               "world; precision@k, recall of the true words in the final top-M):\n")
    out.append("| Stream | world | true words (base rate %) | TANL p@100 at reset / mean over batches / final | "
               "TANL final recall | NegLabel static p@100 / recall |")
    out.append("|---|---|---|---|---|---|")
    for name, rows in res["selection"].items():
        for r in rows:
            out.append(f"| {name} | {r['world']} | {r['true_ood_words']} ({100 * r['base_rate']:.2f}) | "
                       f"{r['tanl_initial'].get('p@100', 0):.2f} / {r['tanl_mean_over_batches']['p@100']:.2f} / "
                       f"{r['tanl_final'].get('p@100', 0):.2f} | {r['tanl_final_recall_of_true_words']:.2f} | "
                       f"{r['neglabel_static'].get('p@100', 0):.2f} / {r['neglabel_static_recall_of_true_words']:.2f} |")
    out.append(f"\n**Stress variants** of the mixed stream (world seeds {seeds['stress_world']}, order seeds "
               f"{seeds['order']}):\n")
    out.append("| Variant | Method | AUROC | FPR95 ID+ (%) | FPR95 OOD+ (%) | AUROC far | AUROC near-ID | runs |")
    out.append("|---|---|---|---|---|---|---|---|")
    for name, block in res["stress"].items():
        for row in _comparison_rows(block):
            out.append(f"| {name} " + row)
    abl = res["ablations"]
    out.append(f"\n**Paper Table 4 chain** (world {abl['world']}, order seeds {abl['order_seeds']}; FPR95 OOD+ % as in "
               "the paper's table, AUROC in brackets):\n")
    out.append("| Configuration | near-ID stream | far stream |")
    out.append("|---|---|---|")
    for label in abl["table4_chain"]["near"]:
        cells = [f"{100 * abl['table4_chain'][s][label]['fpr95_ood_positive']:.1f} "
                 f"({abl['table4_chain'][s][label]['auroc']:.3f})" for s in ("near", "far")]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("\n**Sweeps** (TANL on the mixed stream; AUROC / FPR95 ID+ %; batch size also for AdaNeg):\n")
    out.append("| Parameter | values |")
    out.append("|---|---|")
    for name, rows in abl["sweeps"].items():
        if name == "batch_size":
            cells = [f"{r['value']}: TANL {r['tanl']['auroc']:.3f} / {_pct(r['tanl']['fpr95_id_positive'])}, "
                     f"AdaNeg {r['adaneg']['auroc']:.3f}" for r in rows]
        else:
            cells = [f"{r['value']}: {r['auroc']:.3f} / {_pct(r['fpr95_id_positive'])}" for r in rows]
        out.append(f"| {name} | " + "; ".join(cells) + " |")
    sw = abl["m_sweep"]
    ms = sorted({e["m"] for v in sw.values() for e in v})
    out.append("\n**Number of negatives M** (mixed stream, AUROC):\n")
    out.append("| M | " + " | ".join(str(m) for m in ms) + " |")
    out.append("|---|" + "---|" * len(ms))
    for key, lab in (("tanl", "TANL (activation-aware score)"), ("tanl_score_step0", "TANL selection, one softmax"),
                     ("neglabel", "NegLabel (M farthest)")):
        by = {e["m"]: e for e in sw[key]}
        out.append(f"| {lab} | " + " | ".join(_f(by[m]["auroc"]) if m in by else "" for m in ms) + " |")
    out.append("\n**Stream order** (mixed stream, every world; AUROC / FPR95 OOD+ %):\n")
    out.append("| Method | random | ID first | OOD first |")
    out.append("|---|---|---|---|")
    for m, rows in abl["stream_order"].items():
        out.append(f"| {_name(m)} | " + " | ".join(f"{rows[o]['auroc']:.3f} / {_pct(rows[o]['fpr95_ood_positive'])}"
                                                  for o in ("random", "id_first", "ood_first")) + " |")
    sh = abl["shift"]
    out.append(f"\n**Mid-stream change of the OOD mix** (A -> disjoint B at batch {sh['shift_at_batch']}):\n")
    out.append("| Method | AUROC before | AUROC after | FPR95 ID+ before (%) | FPR95 ID+ after (%) |")
    out.append("|---|---|---|---|---|")
    for k in ("tanl", "neglabel", "adaneg"):
        ph = sh[k]["phases"]
        out.append(f"| {_name(k)} | {_f(ph['before']['auroc'])} | {_f(ph['after']['auroc'])} | "
                   f"{_pct(ph['before']['fpr95_id_positive'])} | {_pct(ph['after']['fpr95_id_positive'])} |")
    out.append(f"\nB dominates TANL's top-100 {sh['tanl']['batches_until_B_dominates_top100']} batches after the shift.\n")
    out.append("**Verdicts** (read off the numbers above):\n")
    for k, v in res["verdicts"].items():
        out.append(f"* {k}: {v}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------- real images


def real_images_tables(res: dict[str, Any]) -> str:
    out = []
    if res.get("warning"):
        out.append(f"> {res['warning']}\n")
    c = res["counts"]
    corpus = res["corpus"]
    out.append(f"Encoder `{res['encoder']}`; corpus {corpus['spec']} ({corpus['labels_after_guard_filters']} labels "
               f"after the guard's filters, of {corpus['labels_loaded']}); ID labels {res['id_labels']}; "
               f"{res['protocol']['reference_anchors']}.\n")
    out.append("| Tier | images | sources | kinds |")
    out.append("|---|---|---|---|")
    for t, v in c.items():
        if v["images"]:
            groups = ", ".join(f"{g} {n}" for g, n in v["groups"].items())
            out.append(f"| {t} | {v['images']} | {v['sources']} | {groups} |")
    out.append(f"\nID volumes (slices): {', '.join(f'{k} {v}' for k, v in res['id_volumes'].items())}. "
               f"Fold groups: {', '.join(f'{k} {v}' for k, v in res['id_fold_groups'].items())}.\n")
    results = res["results"]
    tiers = [t for t in next(iter(results.values()))["separation"] if t != "all"]
    out.append("**Separation** (all_ood streams; AUROC [95 % cluster-bootstrap interval]):\n")
    out.append("| Method | all OOD | FPR95 ID+ | " + " | ".join(t.replace("_", " ") for t in tiers) + " |")
    out.append("|---|---|---|" + "---|" * len(tiers))
    for m, e in results.items():
        s = e["separation"]
        out.append(f"| {_name(m)} | {_ci(s['all']['auroc'])} | {_ci(s['all']['fpr95_id_positive'])} | "
                   + " | ".join(_ci(s[t]["auroc"]) if t in s else "–" for t in tiers) + " |")
    diffs = {k: v for k, v in res.get("paired_auroc_differences", {}).items() if k != "streams"}
    if diffs:
        out.append("\nPaired AUROC differences (same streams, same cluster draws): "
                   + "; ".join(f"{k}: {_ci(v)}" for k, v in diffs.items()) + ".\n")
    for kind in res["protocol"]["stream_kinds"]:
        out.append(f"**Decisions, {kind} streams** (rates [95 % interval]; 'worse' = the lower of ID acceptance and "
                   "OOD rejection):\n")
        out.append("| Method | policy | ID accepted | shifted ID accepted | OOD rejected | worse | "
                   + " | ".join(f"rejected: {t.replace('_', ' ')}" for t in tiers) + " |")
        out.append("|---|---|---|---|---|---|" + "---|" * len(tiers))
        for m, e in results.items():
            for p, d in e["decisions"].items():
                dk = d.get(kind)
                if not dk:
                    continue
                out.append(f"| {_name(m)} | {p} | {_ci(dk['id_acceptance'])} | {_ci(dk['id_shifted_acceptance'])} | "
                           f"{_ci(dk['ood_rejection'])} | {_f(dk.get('worse_of_id_acceptance_and_ood_rejection'), 2)} | "
                           + " | ".join(_ci(dk["ood_rejection_by_tier"].get(t)) for t in tiers) + " |")
        out.append("")
    arts = res["protocol"].get("artefacts") or []
    if arts and any("id95" in d for e in results.values() for d in e["decisions"].values()):
        out.append("**Shifted ID accepted, per artefact** (id95 streams):\n")
        out.append("| Method | policy | clean | " + " | ".join(a.replace("_", " ") for a in arts) + " |")
        out.append("|---|---|---|" + "---|" * len(arts))
        for m, e in results.items():
            for p, d in e["decisions"].items():
                dk = d.get("id95")
                if dk:
                    by = dk["id_shifted_acceptance_by_artefact"]
                    out.append(f"| {_name(m)} | {p} | {_ci(dk['id_acceptance'])} | "
                               + " | ".join(_ci(by.get(a)) for a in arts) + " |")
        out.append("")
    out.append("**Rejections per OOD kind** (all_ood streams, every fold: images x folds):\n")
    policies = list(next(iter(results.values()))["decisions"])
    kinds = list(next(iter(results.values()))["decisions"][policies[0]]["all_ood"]["ood_rejected_by_kind"])
    cols = [(m, p) for m in results for p in policies]
    out.append("| OOD kind | " + " | ".join(f"{_name(m)} {p}" for m, p in cols) + " |")
    out.append("|---|" + "---|" * len(cols))
    for k in kinds:
        out.append(f"| {k} | " + " | ".join(results[m]["decisions"][p]["all_ood"]["ood_rejected_by_kind"].get(k, "–")
                                           for m, p in cols) + " |")
    out.append("\n**ID accepted per fold group** (all_ood streams):\n")
    groups = list(next(iter(results.values()))["decisions"][policies[0]]["all_ood"]["id_accepted_by_group"])
    out.append("| Method | policy | " + " | ".join(groups) + " |")
    out.append("|---|---|" + "---|" * len(groups))
    for m, e in results.items():
        for p, d in e["decisions"].items():
            out.append(f"| {_name(m)} | {p} | " + " | ".join(d["all_ood"]["id_accepted_by_group"].get(g, "–")
                                                          for g in groups) + " |")
    out.append("\n**Thresholds** (all_ood streams; median [min, max] over every batch and fold):\n")
    out.append("| Method | " + " | ".join(policies) + " | nested thresholds per fold |")
    out.append("|---|" + "---|" * len(policies) + "---|")
    for m, e in results.items():
        cells = []
        for p in policies:
            t = e["decisions"][p]["all_ood"]["threshold"]
            cells.append(f"{t['median']:.3f} [{t['min']:.3f}, {t['max']:.3f}]" if t else "–")
        nested = ", ".join(f"{k} {v:.3f}" for k, v in e.get("nested_thresholds", {}).items())
        out.append(f"| {_name(m)} | " + " | ".join(cells) + f" | {nested} |")
    out.append(f"\nRun time: {res['timings_s'].get('total')} s in all; per method: "
               + ", ".join(f"{_name(m)} {e['seconds']} s" for m, e in results.items()) + ".")
    return "\n".join(out)


def controls_table(res: dict[str, Any]) -> str:
    out = [f"Corpus for every encoder: {res['corpus']['spec']} ({res['corpus']['labels_after_guard_filters']} labels "
           f"after the guard's filters, trained encoder); streams all_ood; AUROC against all OOD [95 % interval].\n"]
    runs = res["runs"]
    methods = list(next(iter(runs.values()))["separation_all"])
    out.append("| Encoder | weights sha256 | " + " | ".join(_name(m) for m in methods) + " |")
    out.append("|---|---|" + "---|" * len(methods))
    for enc, r in runs.items():
        out.append(f"| `{enc}` | {r['weights_sha256'][:12]} | "
                   + " | ".join(_ci(r["separation_all"][m]["auroc"]) if m in r["separation_all"] else "–"
                                for m in methods) + " |")
    across = res["random_draws_auroc_all"]
    out.append(f"\nRandom {res['random_arch']} draws, AUROC mean [min, max] over {next(iter(across.values()))['draws']} "
               "draws: " + "; ".join(f"{_name(m)} {v['auroc_mean']:.3f} [{v['auroc_min']:.3f}, {v['auroc_max']:.3f}]"
                                    for m, v in across.items()) + ".")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    which = argv[0] if argv else "simulation"
    if which == "simulation":
        print(simulation_tables(json.loads((RESULTS_DIR / "simulation.json").read_text())))
        cal = RESULTS_DIR / "simulation_calibration.json"
        if cal.is_file():
            print("\n**Calibration search** (`python -m benchmarks simulation --calibrate`):\n")
            print(calibration_table(json.loads(cal.read_text())))
    elif which == "controls":
        print(controls_table(json.loads((RESULTS_DIR / "real_images_controls.json").read_text())))
    else:
        slug = argv[1] if len(argv) > 1 else "surrogate"
        path = Path(slug) if slug.endswith(".json") else RESULTS_DIR / f"real_images_{slug}.json"
        print(real_images_tables(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
