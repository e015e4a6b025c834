"""Tests of densecontrast.demo.pictures: detection kinds, the error map, and the figures' content."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")

from densecontrast.datasets import SyntheticInstances
from densecontrast.demo.pictures import (
    ERROR_VALUES,
    Detection,
    classify_detections,
    error_map,
    plot_errors,
    plot_losses,
    plot_predictions,
)


def _box(size: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def _scene() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Two objects (class 1 top left, class 2 bottom right) and five detections of known kinds."""
    gt = torch.stack([_box(12, 0, 4, 0, 4), _box(12, 6, 10, 6, 10)])
    labels = torch.tensor([1, 2])
    dets = [
        (_box(12, 0, 4, 0, 4), 1, 0.9),  # matches object 0
        (_box(12, 0, 4, 0, 3), 1, 0.8),  # object 0 again, lower score: duplicate
        (_box(12, 6, 10, 6, 10), 1, 0.7),  # on object 1 but class 1: wrong class
        (_box(12, 0, 2, 9, 12), 2, 0.6),  # on background: false
        (_box(12, 6, 10, 6, 10), 2, 0.3),  # below the drawing threshold
    ]
    output = {
        "masks": torch.stack([d[0].float() for d in dets])[:, None],
        "labels": torch.tensor([d[1] for d in dets]),
        "scores": torch.tensor([d[2] for d in dets]),
    }
    return gt, labels, output


def test_detections_are_classified_as_match_duplicate_wrong_class_and_false() -> None:
    gt, labels, output = _scene()
    found = classify_detections(gt, labels, output)
    assert [d.kind for d in found] == ["match", "duplicate", "wrong class", "false"]
    assert [d.gt for d in found] == [0, 0, -1, -1]
    assert [d.score for d in found] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    # the same detections listed in another order give the same kinds (highest score matches first)
    perm = torch.tensor([3, 1, 4, 0, 2])
    shuffled = {key: value[perm] for key, value in output.items()}
    assert [d.kind for d in classify_detections(gt, labels, shuffled)] == [d.kind for d in found]
    assert classify_detections(gt, labels, output, threshold=0.95) == []
    assert [d.kind for d in classify_detections(gt[:0], labels[:0], output)] == ["false"] * 4


def test_error_map_known_answer() -> None:
    gt = torch.stack([_box(6, 0, 3, 0, 3), _box(6, 3, 6, 3, 6)])  # 9 pixels each; object 1 never found
    pred = _box(6, 1, 4, 1, 4)  # 4 pixels of object 0, 1 pixel of object 1, 4 of background
    err = error_map(gt, [Detection(pred, 1, 0.9, "match", 0)])
    assert int((err == ERROR_VALUES["ok"]).sum()) == 4
    assert int((err == ERROR_VALUES["FN"]).sum()) == 5 + 8  # the rest of object 0, object 1 but one pixel
    assert int((err == ERROR_VALUES["bFP"]).sum()) == 4
    assert int((err == ERROR_VALUES["fFP"]).sum()) == 1 and bool(err[3, 3] == ERROR_VALUES["fFP"])
    assert int((error_map(gt, []) == ERROR_VALUES["FN"]).sum()) == 18


def test_error_map_shows_false_detections() -> None:
    gt, labels, output = _scene()
    err = error_map(gt, classify_detections(gt, labels, output))
    false = err == ERROR_VALUES["false"]
    assert bool(false[0:2, 9:12].all())  # the background detection
    assert bool(false[6:10, 6:10].all())  # the wrong-class detection, over the missed object
    assert bool((err[0:4, 0:4] == ERROR_VALUES["ok"]).all())
    assert int(false.sum()) == 6 + 16


def _outputs(data: SyntheticInstances) -> list[dict[str, torch.Tensor]]:
    """Perfect detections of every object, plus a duplicate of the first one of each image."""
    outputs = []
    for i in range(len(data)):
        target = data[i][1]
        masks = torch.cat([target["masks"], target["masks"][:1]]).float()[:, None]
        labels = torch.cat([target["labels"], target["labels"][:1]])
        scores = torch.cat([torch.ones(target["masks"].shape[0]), torch.tensor([0.6])])
        outputs.append({"masks": masks, "labels": labels, "scores": scores})
    return outputs


def test_prediction_grid_labels_classes_scores_and_duplicates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = SyntheticInstances(2, image_size=64, seed=0, split="val")
    outputs = _outputs(data)
    fig = plot_predictions(
        data, {"Baseline": outputs, "+DCL": outputs}, tmp_path / "p.png", aps={"+DCL": 1.0}
    )
    assert (tmp_path / "p.png").stat().st_size > 0
    axes = fig.axes
    assert len(axes) == (1 + 2 * 2) * 2  # ground truth, then detections and errors per model; 2 columns
    names = {c["name"] for c in data.categories}
    gt_texts = [t.get_text() for t in axes[0].texts]
    assert len(gt_texts) == data[0][1]["masks"].shape[0] and set(gt_texts) <= names
    det_texts = [t.get_text() for t in axes[2].texts]  # row 1 (Baseline detections), column 0
    assert sum(t.endswith("duplicate") for t in det_texts) == 1
    assert sum(t.endswith(" 1.00") for t in det_texts) == data[0][1]["masks"].shape[0]
    assert all(t.split()[0] in names for t in det_texts)
    n = data[0][1]["masks"].shape[0]
    assert axes[2].get_xaxis().get_label().get_text() == f"found {n} of {n}; 1 dup., 0 wrong class, 0 false"
    assert "AP 100.0" in axes[6].get_yaxis().get_label().get_text()  # +DCL's detection row
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("false detection") for t in legend) and len(legend) == 5


def test_an_object_without_a_mask_stays_grey() -> None:
    """The detection row's base image is grey, so colour there comes from masks only."""
    data = SyntheticInstances(1, image_size=64, seed=1, split="val")
    empty = {"masks": torch.zeros(0, 1, 64, 64), "labels": torch.zeros(0, dtype=torch.int64),
             "scores": torch.zeros(0)}  # fmt: skip
    fig = plot_predictions(data, {"m": [empty]}, None, images=1)
    pixels = fig.axes[1].get_images()[0].get_array()
    assert float(abs(pixels[..., 0] - pixels[..., 1]).max()) < 1e-9
    assert float(abs(pixels[..., 1] - pixels[..., 2]).max()) < 1e-9
    assert len(fig.axes[1].texts) == 0


def _report(ap: float, ffp: float, bfp: float, fn: float) -> SimpleNamespace:
    return SimpleNamespace(ap=ap, delta={"fFP": ffp, "bFP": bfp, "FN": fn})


def test_error_chart_has_one_bar_per_type_and_model_in_ap_points() -> None:
    fig = plot_errors(
        {"Baseline": _report(0.3, 0.03, 0.05, 0.08), "+DCL": _report(0.32, 0.02, 0.05, 0.07)}, None
    )
    (ax,) = fig.axes
    assert len(ax.containers) == 2 and all(len(c) == 3 for c in ax.containers)
    assert [round(b.get_height(), 6) for b in ax.containers[1]] == [2.0, 5.0, 7.0]
    assert "AP points" in ax.get_ylabel() and "%" not in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Baseline (AP 30.0)", "+DCL (AP 32.0)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ΔAP$_{fFP}$", "ΔAP$_{bFP}$", "ΔAP$_{FN}$"]


def test_loss_curves_one_panel_per_term() -> None:
    history = [{"loss_mask": 1.0 / (s + 1), "loss": 2.0 / (s + 1)} for s in range(30)]
    fig = plot_losses({"baseline": history, "dcl": [{**h, "loss_dcl": 0.5} for h in history]}, None)
    shown = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title().split()[0] for ax in shown] == ["loss_mask", "loss", "loss_dcl"]
    assert [len(ax.lines) for ax in shown] == [4, 4, 2]  # raw and smoothed, per model that has the term
