"""The report: tables, per-category order, JSON, and plots checked through their matplotlib objects."""

from __future__ import annotations

import json
import math

import pytest

from densecontrast.analysis import SegmentationErrorReport, analyze, compare_table, plot_comparison

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

DETECTION = ["cls", "loc", "both", "dupe", "bkg", "missed", "FalsePos", "FalseNeg"]


@pytest.fixture(scope="module")
def reports(coco_scene: tuple[dict, list[dict]]) -> dict[str, SegmentationErrorReport]:
    gt, results = coco_scene
    return {
        "base": analyze(gt, results, backend="faster-coco-eval"),
        "other": analyze(gt, [r for i, r in enumerate(results) if i % 3], backend="faster-coco-eval"),
        "boxes": analyze(gt, results, backend="faster-coco-eval", iou_type="bbox"),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def test_table_lists_every_type_with_its_values(reports) -> None:
    rep = reports["base"]
    lines = rep.table().splitlines()
    assert lines[0].split()[:3] == ["mask", "AP", _pct(rep.ap)]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  ")}
    for t in DETECTION:
        assert rows[t][1:4] == [_pct(rep.detection[t]), _pct(rep.detection50[t]), _pct(rep.detection75[t])]
    for t in ("cls", "loc", "both", "dupe", "bkg", "missed"):
        assert rows[t][4] == str(rep.detection_counts[t])
    for t in ("fFP", "bFP", "FN"):
        assert rows[t][1:5] == [
            _pct(rep.delta[t]),
            _pct(rep.delta50[t]),
            _pct(rep.delta75[t]),
            str(rep.pixels[t]),
        ]
    box_lines = reports["boxes"].table().splitlines()
    assert box_lines[0].startswith("box AP") and not any(line.split()[0] == "fFP" for line in box_lines[2:])


@pytest.mark.parametrize("sort_by", ["missed", "FN", "total", None])
def test_category_table_sorted_by_cost(reports, sort_by) -> None:
    rep = reports["base"]
    lines = rep.category_table(sort_by=sort_by).splitlines()
    head = lines[0].split()
    assert head[:3] == ["category", "#gt", "AP"] and len(head) == 3 + 8 + 3
    names = [line.split()[0] for line in lines[1:]]
    cats = list(rep.per_category.values())
    if sort_by is None:
        assert names == [c.name for c in cats]
    else:
        costs = sorted((c.cost(sort_by) for c in cats), reverse=True)
        assert [rep.per_category[k].cost(sort_by) for k, _ in rep.categories_by_cost(sort_by)] == costs
        assert names == [c.name for _, c in rep.categories_by_cost(sort_by)]
    with pytest.raises(ValueError, match="error must be"):
        rep.category_table(sort_by="nonsense")


def test_compare_table_has_one_row_per_report(reports) -> None:
    table = compare_table({"base": reports["base"], "other": reports["other"]})
    head, *rows = table.splitlines()
    assert head.split()[:2] == ["name", "AP"] and len(head.split()) == 2 + 8 + 3
    assert [r.split()[0] for r in rows] == ["base", "other"]
    rep = reports["other"]
    expected = [
        _pct(rep.ap),
        *(_pct(rep.detection[t]) for t in DETECTION),
        *(_pct(rep.delta[t]) for t in rep.delta),
    ]
    assert rows[1].split()[1:] == expected
    # boxes have no pixel columns: a comparison shows the columns both reports have
    assert len(compare_table({"m": reports["base"], "b": reports["boxes"]}).splitlines()[0].split()) == 2 + 8
    with pytest.raises(ValueError, match="non-empty"):
        compare_table({})


def test_to_dict_is_json_and_complete(reports) -> None:
    d = json.loads(json.dumps(reports["boxes"].to_dict()))
    assert d["iou_type"] == "bbox" and d["delta"]["FN"] is None  # NaN -> None
    assert set(d["detection"]) == set(DETECTION)
    cat = next(iter(d["per_category"].values()))
    assert set(cat["detection"]) == set(DETECTION) and set(cat["detection_counts"]) == set(DETECTION[:6])


def _bar_heights(ax) -> list[float]:
    return [round(p.get_height(), 6) for p in ax.patches]


def test_plot_has_a_panel_per_family_and_a_bar_per_type(reports, tmp_path) -> None:
    rep = reports["base"]
    fig = rep.plot(tmp_path / "one.png")
    det_ax, pix_ax = fig.axes
    assert [t.get_text() for t in det_ax.get_xticklabels()] == DETECTION
    assert _bar_heights(det_ax) == [round(100 * rep.detection[t], 6) for t in DETECTION]
    assert _bar_heights(pix_ax) == [round(100 * rep.delta[t], 6) for t in ("fFP", "bFP", "FN")]
    assert det_ax.get_legend() is None and (tmp_path / "one.png").stat().st_size > 0
    assert len(reports["boxes"].plot().axes) == 1  # boxes: detection errors only


def test_comparison_plot_groups_bars_per_report(reports) -> None:
    fig = plot_comparison({"base": reports["base"], "other": reports["other"]}, title="two models")
    det_ax, pix_ax = fig.axes
    assert len(det_ax.patches) == 2 * 8 and len(pix_ax.patches) == 2 * 3
    assert [t.get_text() for t in pix_ax.get_legend().get_texts()] == [
        f"base (AP {_pct(reports['base'].ap)})",
        f"other (AP {_pct(reports['other'].ap)})",
    ]
    from matplotlib.text import Text

    assert "two models" in [t.get_text() for t in fig.findobj(Text)]
    assert det_ax.get_ylabel() == "AP gained if fixed (AP points)"  # measured points, not a percentage


def test_category_plot_has_a_panel_per_type_and_a_bar_per_category(reports) -> None:
    rep = reports["base"]
    fig = rep.plot_categories(sort_by="FN", top=3)
    assert len(fig.axes) == 8 + 3
    order = [f"{c.name} (AP {_pct(c.ap)})" for _, c in rep.categories_by_cost("FN")][:3]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == order[::-1]  # costliest on top
    fn_ax = fig.axes[-1]
    assert fn_ax.get_title() == "ΔFN" and len(fn_ax.patches) == 3
    assert fig.get_supxlabel() == "AP gained if fixed (AP points)"
    widths = [p.get_width() for p in fn_ax.patches]
    assert widths == sorted(widths) and not any(math.isnan(w) for w in widths)
