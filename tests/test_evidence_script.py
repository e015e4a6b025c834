"""Test of benchmarks/evidence.py and benchmarks/render_evidence.py (the evidence study's scripts)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evidence_quick_profile_resumes_and_renders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/evidence.py --quick writes one JSON per (seed, variant), skips them when run again, and
    benchmarks/render_evidence.py turns them into the docs table and plot."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    results = tmp_path / "results"
    cmd = [sys.executable, str(bench / "evidence.py"), "--quick", "--seeds", "0", "--results", str(results)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    folder = results / "quick"
    record = json.loads((folder / "seed0_dcl.json").read_text())
    assert record["config"]["seed"] == 0 and record["eval_split"] == {"split": "val", "seed": 0, "images": 3}
    assert set(record["delta"]) == {"fFP", "bFP", "FN"} and "intra" in record["compactness"]
    assert "loss_dcl" in record["final_losses"]
    assert "loss_dcl" not in json.loads((folder / "seed0_baseline.json").read_text())["final_losses"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    again = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    assert ": training" not in again.stdout  # finished runs are not trained again
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} == before
    doc = tmp_path / "evidence.md"
    doc.write_text(
        "# Evidence\n\nprose\n<!-- evidence:begin -->\nSTALE-TABLE\n<!-- evidence:end -->\nmore prose\n"
    )
    render = [
        sys.executable,
        str(bench / "render_evidence.py"),
        "--profile",
        "quick",
        "--results",
        str(results),
    ]
    render += ["--doc", str(doc), "--img", str(tmp_path / "evidence.png"), "--seeds", "0", "1"]
    subprocess.run(render, check=True, capture_output=True, timeout=300)
    text = doc.read_text()
    assert "STALE-TABLE" not in text and "prose" in text and "more prose" in text
    assert "| 0 | +DCL λ=1.2 |" in text and "Not finished yet:** seed 1 Baseline, seed 1 +DCL λ=1.2" in text
    assert (tmp_path / "evidence.png").read_bytes()[:8] == PNG
