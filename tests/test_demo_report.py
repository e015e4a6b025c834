"""Tests of densecontrast.demo.report: the console text of ``densecontrast demo``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from densecontrast.demo.config import PAIRED_AP_STD
from densecontrast.demo.report import ap_table, compactness_table, detection_counts, did_it_help


def _report(ap: float, **extra: object) -> SimpleNamespace:
    fields = {
        "ap": ap, "ap50": ap + 0.1, "ap75": ap + 0.05, "ap_upper": ap + 0.2,
        "delta": {"fFP": 0.03, "bFP": 0.05, "FN": 0.08}, "num_matched": 7, "num_unmatched": 5, "min_iou": 0.1,
    }  # fmt: skip
    fields.update(extra)
    return SimpleNamespace(**fields)


def test_ap_table_is_one_table_with_explained_headers_and_a_difference_row() -> None:
    table = ap_table(
        {"Baseline": _report(0.30), "+DCL": _report(0.325, delta={"fFP": 0.02, "bFP": 0.05, "FN": 0.07})},
        images=100,
    )
    lines = table.splitlines()
    assert "100 held-out images" in lines[0] and "AP points" in lines[0]
    header = next(line for line in lines if line.startswith("model"))
    assert header.split() == ["model", "AP", "AP50", "AP75", "ΔfFP", "ΔbFP", "ΔFN", "all", "fixed"]
    assert "value" not in table and "Table 8" not in table
    for name in ("ΔfFP", "ΔbFP", "ΔFN", "all fixed", "AP50"):  # every header is explained above the table
        assert any(name in line for line in lines[: lines.index(header)])
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 1 :]}
    assert rows["Baseline"] == ["30.0", "40.0", "35.0", "3.0", "5.0", "8.0", "50.0"]
    assert rows["+DCL"][:1] == ["32.5"]
    assert rows["difference"] == ["+2.5", "+2.5", "+2.5", "-1.0", "+0.0", "-1.0", "+2.5"]
    single = ap_table({"+DCL": _report(0.3)}, images=5)
    assert "difference" not in single and single.count("\n+DCL") == 1


@pytest.mark.parametrize(
    ("dcl", "verdict"),
    [(0.32, "cannot tell it from no change"), (0.36, "larger than the seed-to-seed noise")],
)
def test_did_it_help_sets_the_difference_against_the_evidence_noise(dcl: float, verdict: str) -> None:
    text = did_it_help(0.30, dcl, weight=0.1, steps=1200)
    assert f"{100 * (dcl - 0.30):+.1f} AP points" in text
    assert f"standard deviation {PAIRED_AP_STD[0.1]:.1f}" in text and "docs/evidence.md" in text
    assert verdict in text


def test_did_it_help_says_when_the_noise_was_not_measured() -> None:
    assert "not at λ = 0.7" in did_it_help(0.3, 0.31, weight=0.7, steps=1200)
    assert "trained 300 steps" in did_it_help(0.3, 0.31, weight=0.1, steps=300)


def test_detection_counts_explain_matched_and_unmatched_in_words() -> None:
    outputs = [{"scores": torch.tensor([0.9, 0.6, 0.2])}, {"scores": torch.tensor([0.1, 0.7])}]
    text = detection_counts("+DCL", _report(0.3, num_matched=3, num_unmatched=2), outputs)
    assert text.startswith("+DCL: 5 detections of every score")
    assert "the 3 scoring ≥ 0.5" in text
    low = detection_counts("+DCL", _report(0.3), [{"scores": torch.tensor([0.2])}])
    assert "draw none: no detection scores ≥ 0.5" in low
    assert "3 overlap an object of their class (mask IoU ≥ 0.1)" in text
    assert "2 overlap none (wrong class or no object)" in text


def test_compactness_table_rows() -> None:
    c = SimpleNamespace(intra=0.75, inter=0.7, background=0.8, separation=1.03, num_instances=230)
    text = compactness_table([{"label": "Baseline", "compactness": c}])
    assert text.splitlines()[-1].split() == ["Baseline", "0.750", "0.700", "0.800", "1.03", "230"]
    assert "intra:" in text and "separation:" in text
