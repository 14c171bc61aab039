"""Series and study verdict rules, and the threshold policy parser."""

from __future__ import annotations

import pytest

from tanl_guard.guard import GuardPolicy, SeriesVerdict, ThresholdPolicy, combine_series, study_verdict


def _series(verdict, score=None, reason=None, negatives=()):
    return SeriesVerdict(series=f"s{score}", modality="MR", verdict=verdict, id_score=score,
                         threshold=None if score is None else 0.5, views=3 if score is not None else 0,
                         top_negatives=tuple(negatives), reason=reason)


@pytest.mark.parametrize(
    "policy, verdicts, expected",
    [
        ("any", ["accept", "accept"], "accept"),
        ("any", ["accept", "reject"], "reject"),
        ("all", ["accept", "reject"], "accept"),
        ("all", ["reject", "reject"], "reject"),
        ("majority", ["accept", "reject"], "accept"),  # a tie is not a majority
        ("majority", ["reject", "reject", "accept"], "reject"),
    ],
)
def test_study_policies(policy, verdicts, expected):
    series = [_series(v, 0.9 if v == "accept" else 0.1) for v in verdicts]
    assert combine_series(series, policy)[0] == expected


def test_unreadable_series_never_count_as_accepted():
    only_bad = [_series("unreadable", reason="missing decoder: pylibjpeg-libjpeg")] * 2
    verdict, reason = combine_series(only_bad)
    assert verdict == "unreadable" and "2 x missing decoder" in reason
    mixed = [_series("accept", 0.8), _series("unreadable", reason="truncated pixel data")]
    verdict, reason = combine_series(mixed)
    assert verdict == "accept" and "1 series unreadable" in reason
    assert combine_series([])[0] == "unreadable"


def test_study_verdict_takes_lowest_score_and_merges_negatives():
    series = [_series("accept", 0.8, negatives=("brain",)), _series("reject", 0.2, negatives=("teapot", "cat"))]
    v = study_verdict("abc", series, "any", top_k=2, step=7)
    assert v.verdict == "reject" and v.id_score == 0.2 and v.threshold == 0.5 and v.step == 7
    assert v.top_negatives == ("teapot", "cat")
    line = v.to_json()
    assert set(line) == {"study", "verdict", "id_score", "threshold", "series", "top_negatives", "reason",
                         "conflicts"}
    assert line["series"][1] == {"series": "s0.2", "modality": "MR", "verdict": "reject", "id_score": 0.2,
                                 "views": 3, "reason": None, "conflicts": 0}


def test_threshold_policy_parse():
    assert ThresholdPolicy.parse("adaptive") == ThresholdPolicy("adaptive")
    assert ThresholdPolicy.parse("0.42") == ThresholdPolicy("fixed", 0.42)
    assert ThresholdPolicy.parse("calibrated:0.9") == ThresholdPolicy("calibrated", 0.9)
    assert ThresholdPolicy.parse("calibrated") == ThresholdPolicy("calibrated", 0.95)
    assert str(ThresholdPolicy.parse("calibrated:0.9")) == "calibrated:0.9"
    for bad in ("1.5", "calibrated:1", "often", "calibrated:x"):
        with pytest.raises(ValueError):
            ThresholdPolicy.parse(bad)
    with pytest.raises(ValueError):
        GuardPolicy(study_policy="some")


def test_verdict_words_are_one_str_enum_written_as_bare_words():
    import json

    from tanl_guard.guard import Verdict

    assert [str(v) for v in Verdict] == ["accept", "reject", "unreadable"]
    study = study_verdict("k1", [_series("reject", 0.1), _series("unreadable", reason="decode_error")])
    assert study.verdict is Verdict.REJECT and study.series[1].verdict is Verdict.UNREADABLE
    line = json.dumps(study.to_json())
    assert '"verdict": "reject"' in line and '"verdict": "unreadable"' in line
    assert type(study.to_json()["verdict"]) is str  # plain words in files (and torch's weights_only loads)
    again = type(study).from_json(json.loads(line))
    assert again.verdict is Verdict.REJECT and [s.verdict for s in again.series] == [Verdict.REJECT, Verdict.UNREADABLE]
    assert f"{study.verdict:<8}|" == "reject  |" and {"reject": 1}[study.verdict] == 1
    with pytest.raises(ValueError):
        _series("maybe", 0.5)


def test_counts_metrics_and_reject_rate_have_one_definition():
    from tanl_guard.guard.counts import StudyCounts, count_studies, is_orphan_file, reject_rate

    records = [{"study": "a", "verdict": "accept"}, {"study": "b", "verdict": "reject"},
               {"study": "c", "verdict": "reject"}, {"study": "d", "verdict": "unreadable"},
               {"study": None, "verdict": "unreadable"}]
    counts = count_studies(records)
    assert [is_orphan_file(r) for r in records] == [False] * 4 + [True]
    assert (counts.studies, counts.accept, counts.reject, counts.unreadable, counts.orphan_files) == (4, 1, 2, 1, 1)
    assert counts.reject_rate == reject_rate(1, 2) == 2 / 3 and reject_rate(0, 0) == 0.0
    metrics = counts.metrics()
    assert list(metrics) == ["screen/accepted", "screen/rejected", "screen/unreadable", "screen/studies",
                             "screen/orphan_files", "screen/reject_rate"]
    assert metrics["screen/rejected"] == 2.0 and metrics["screen/studies"] == 4.0
    assert StudyCounts.from_metrics(metrics) == counts
