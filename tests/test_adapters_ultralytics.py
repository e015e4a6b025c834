"""Tests of densecontrast.adapters.ultralytics on real YOLO-seg models built from Ultralytics' yaml files.

No downloads: models come from the bundled yaml files with random weights, data from SyntheticInstances
written in the YOLO format, batches from Ultralytics' own dataset and collate code. Images are 64 x 64.
"""

from __future__ import annotations

import copy
import os
import pathlib
import subprocess
import sys
import warnings
import weakref
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

os.environ.setdefault("YOLO_OFFLINE", "1")
pytest.importorskip("ultralytics")

from _helpers import is_released, run_in_threads
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, SegmentationModel
from ultralytics.utils import DEFAULT_CFG

from densecontrast import DenseContrastiveLoss
from densecontrast.adapters.rois import gt_box_rois
from densecontrast.adapters.ultralytics import (
    LOSS_KEY,
    SUBMODULE_NAME,
    DenseContrastHandle,
    DenseContrastSegmentationTrainer,
    attach,
    batch_instances,
    get_handle,
)
from densecontrast.datasets import SyntheticInstances, export_yolo

IMGSZ = 64
NUM_CLASSES = 3
BASE_LOSSES = ["box_loss", "seg_loss", "cls_loss", "dfl_loss", "sem_loss"]


def _hook_count(model: nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, n)) for m in model.modules() for n in names)


_BUILT: dict[str, nn.Module] = {}


def _seg_model(yaml: str = "yolov8n-seg.yaml", **overrides: Any) -> nn.Module:
    """A fresh copy of the model built from ``yaml`` (seed 0), with ``overrides`` as its args.

    Building runs Ultralytics' stride probe (a forward pass at 256 x 256), the slowest part of most tests
    here: each yaml is built once per session and deep-copied, so every test still owns its model.
    """
    if yaml not in _BUILT:
        torch.manual_seed(0)
        _BUILT[yaml] = SegmentationModel(yaml, nc=NUM_CLASSES, verbose=False)
    model = copy.deepcopy(_BUILT[yaml])
    model.args = get_cfg(DEFAULT_CFG, overrides)
    return model


def _step(model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    """``model(batch)`` with its loss items as a dict, whatever the Ultralytics version (before the loss
    dict, the items are a tensor whose names the trainer keeps; the adapter appends dcl_loss last)."""
    loss_vec, items = model(batch)
    if isinstance(items, Tensor):
        items = dict(zip([*BASE_LOSSES, LOSS_KEY], items.unbind()))
    return loss_vec, items


@pytest.fixture(scope="module")
def yolo_wrapper() -> Any:
    """An Ultralytics ``YOLO`` wrapper of a yolov8n-seg (80 classes) built from its yaml."""
    from ultralytics import YOLO

    return YOLO("yolov8n-seg.yaml")


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    ds = SyntheticInstances(4, image_size=IMGSZ, num_categories=NUM_CLASSES, min_instances=2, max_instances=3)
    return export_yolo(ds, tmp_path_factory.mktemp("yolo"))


class _Separated(torch.utils.data.Dataset):
    """Four images of two or three ellipses that never touch (so no pixel belongs to two polygons)."""

    categories: ClassVar[list[dict[str, Any]]] = [
        {"id": c, "name": f"c{c}"} for c in range(1, NUM_CLASSES + 1)
    ]

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        yy, xx = torch.meshgrid(torch.arange(IMGSZ) + 0.5, torch.arange(IMGSZ) + 0.5, indexing="ij")
        centres = [(14 + 2 * index, 16, 8, 11), (44, 20 + 3 * index, 12, 7), (40, 50, 6, 6)][: 2 + index % 2]
        masks = torch.stack(
            [
                (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).to(torch.uint8)
                for cy, cx, ry, rx in centres
            ]
        )
        image = torch.rand(3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(index))
        return image, {"masks": masks, "labels": torch.arange(len(centres)) % NUM_CLASSES + 1}


@pytest.fixture(scope="module")
def separated_yaml(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return export_yolo(_Separated(), tmp_path_factory.mktemp("separated"))


def _batch(data_yaml: pathlib.Path, overlap_mask: bool, mask_ratio: int = 4) -> dict[str, Any]:
    """A validation-mode batch of all 4 images (no augmentation), built by Ultralytics' own code."""
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg(DEFAULT_CFG, {"task": "segment", "imgsz": IMGSZ, "overlap_mask": overlap_mask,
                                "mask_ratio": mask_ratio, "plots": False})  # fmt: skip
    dataset = build_yolo_dataset(cfg, data["train"], 4, data, mode="val", stride=32)
    batch = dataset.collate_fn([dataset[i] for i in range(4)])
    batch["img"] = batch["img"].float() / 255
    return batch


@pytest.fixture(scope="module")
def batches(data_yaml: pathlib.Path) -> dict[bool, dict[str, Any]]:
    return {overlap: _batch(data_yaml, overlap) for overlap in (True, False)}


@pytest.fixture(scope="module")
def step(batches: dict[bool, dict[str, Any]]) -> dict[str, Any]:
    """One training call model(batch) of an attached yolov8n-seg, with the prototypes tapped."""
    model = _seg_model().train()
    handle = attach(model)
    protos: list[Tensor] = []
    tap = model.model[-1].proto.register_forward_hook(lambda m, a, out: protos.append(out))
    loss_vec, items = _step(model, batches[True])
    tap.remove()
    loss_vec[-1].backward()
    return {"model": model, "handle": handle, "loss": loss_vec, "items": items, "protos": protos}


# ---------------------------------------------------------------- a real training call


def test_dcl_loss_is_appended_to_the_vector_and_the_dict(step: dict[str, Any]) -> None:
    loss, items = step["loss"], step["items"]
    assert list(items) == [*BASE_LOSSES, LOSS_KEY]
    assert loss.shape == (len(BASE_LOSSES) + 1,) and torch.isfinite(loss).all()
    assert items[LOSS_KEY] > 0 and not items[LOSS_KEY].requires_grad
    # The vector holds each item times the batch size, like Ultralytics' own entries.
    torch.testing.assert_close(loss[-1].detach(), items[LOSS_KEY] * 4)
    torch.testing.assert_close(loss[1].detach(), items["seg_loss"] * 4)


def test_the_loss_runs_on_gt_box_rois_of_the_prototypes_weighted_by_lambda_and_box_gain(
    batches: dict[bool, dict[str, Any]],
) -> None:
    """The criterion receives exactly gt_box_rois(prototypes, the batch's instances), and
    dcl_loss = weight * box * L."""
    model = _seg_model(box=3.0).train()
    attach(model, weight=0.5)
    seen: list[tuple[Tensor, Tensor, Tensor]] = []
    crit = model.dense_contrast
    original = crit.forward

    def recording(feats: Tensor, masks: Tensor) -> Tensor:
        loss = original(feats, masks)
        seen.append((feats.detach(), masks, loss.detach()))
        return loss

    crit.forward = recording  # type: ignore[method-assign]
    protos: list[Tensor] = []
    tap = model.model[-1].proto.register_forward_hook(lambda m, a, out: protos.append(out.detach()))
    _, items = _step(model, batches[True])
    tap.remove()
    (feats, masks, loss), *rest = seen
    assert not rest and len(protos) == 1 and protos[0].shape == (4, 32, IMGSZ // 4, IMGSZ // 4)
    instance_masks, boxes = batch_instances(batches[True], 4, overlap_mask=True)
    rois = gt_box_rois(protos[0], instance_masks, boxes)
    assert feats.shape == (len(rois.feats), 32, 28, 28) and len(rois.feats) >= 8
    assert torch.equal(feats, rois.feats) and torch.equal(masks, rois.masks)
    torch.testing.assert_close(items[LOSS_KEY], 0.5 * 3.0 * loss)


def test_gradients_reach_the_prototype_branch_and_the_projector(step: dict[str, Any]) -> None:
    model = step["model"]
    head = model.model[-1]
    for name, module in (("projector", model.dense_contrast.projector), ("proto", head.proto)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # dcl_loss alone was backpropagated: the box, class and coefficient branches get nothing (zeros
    # through the loss vector's concatenation).
    for branch in (head.cv2, head.cv3, head.cv4):
        assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in branch.parameters())


def test_captures_are_cleared_after_the_step(step: dict[str, Any]) -> None:
    handle = step["handle"]
    assert handle.pending_steps == 0


def test_a_training_forward_on_images_captures_nothing_and_warns_once(
    batches: dict[bool, dict[str, Any]],
) -> None:
    model = _seg_model().train()
    handle = attach(model)
    refs: list[weakref.ref[Tensor]] = []
    tap = model.model[-1].proto.register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
    images = batches[True]["img"]
    with pytest.warns(RuntimeWarning, match=r"dcl_loss was not computed.*model\(batch\)"):
        preds = model(images)
    assert handle.pending_steps == 0
    del preds  # what the caller holds; nothing else may keep the prototypes and their graph alive
    assert len(refs) == 1 and is_released(refs[0]), "model(images) left its prototypes referenced"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per handle
        model(images)
        _, items = _step(model, batches[True])  # a real step still gets its term
    tap.remove()
    assert LOSS_KEY in items and handle.pending_steps == 0


@pytest.mark.parametrize("with_preds", [False, True])
def test_calling_model_loss_directly_warns_that_dcl_loss_is_missing(
    batches: dict[bool, dict[str, Any]], with_preds: bool
) -> None:
    model = _seg_model().train()
    handle = attach(model)
    batch = batches[True]
    with pytest.warns(RuntimeWarning, match=r"model\.loss\(\.\.\.\) called directly"):
        preds = model(batch["img"]) if with_preds else None
        _, items = model.loss(batch, preds)
    names = list(items) if isinstance(items, dict) else BASE_LOSSES[: items.numel()]  # older: a tensor
    assert LOSS_KEY not in names and handle.pending_steps == 0


# ---------------------------------------------------------------- the batch: overlap_mask, boxes


def test_both_overlap_mask_layouts_give_the_same_roi_masks(separated_yaml: pathlib.Path) -> None:
    """For instances that do not overlap, the index-map layout (instances sorted by area) and the
    one-mask-per-instance layout describe the same instances: the same RoIs, in another order."""
    feats = torch.randn(4, 8, IMGSZ // 4, IMGSZ // 4)
    results = {}
    for overlap in (True, False):
        batch = _batch(separated_yaml, overlap)
        masks, boxes = batch_instances(batch, 4, overlap_mask=overlap)
        rois = gt_box_rois(feats, masks, boxes, output_size=14, margin=0.1)
        order = sorted(
            range(len(rois.boxes)), key=lambda r: (int(rois.batch_idx[r]), *rois.boxes[r].tolist())
        )
        results[overlap] = (rois.boxes[order], rois.masks[order], rois.feats[order], rois.batch_idx[order])
    assert len(results[True][0]) == len(results[False][0]) == 10
    for a, b in zip(results[True], results[False]):
        assert torch.equal(a, b)


def test_boxes_are_scaled_from_normalised_form_for_any_mask_ratio(data_yaml: pathlib.Path) -> None:
    batch = _batch(data_yaml, overlap_mask=False, mask_ratio=2)
    assert batch["masks"].shape[-2:] == (IMGSZ // 2, IMGSZ // 2)
    masks, boxes = batch_instances(batch, 4, overlap_mask=False)
    cx, cy, w, h = batch["bboxes"][0].tolist()
    torch.testing.assert_close(
        boxes[0][0], torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * 32
    )
    for m, b in zip(masks, boxes):  # each box frames its mask (up to rounding of the polygon)
        for mask, box in zip(m, b):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
            assert ys.min() >= box[1] - 1 and ys.max() + 1 <= box[3] + 1
    # Prototypes at 1/4 over masks at 1/2: the stride is inferred (0.5) and the loss runs.
    model = _seg_model(mask_ratio=2, overlap_mask=False).train()
    attach(model)
    _, items = _step(model, batch)
    assert torch.isfinite(items[LOSS_KEY]) and items[LOSS_KEY] > 0


def test_multi_scale_images_with_masks_at_the_trained_size(batches: dict[bool, dict[str, Any]]) -> None:
    """Multi-scale training resizes the images (so the prototypes) but not the masks: the RoI masks stay
    the same, the prototypes' stride over the masks changes, and the loss runs."""
    batch = dict(batches[True])
    batch["img"] = torch.nn.functional.interpolate(batch["img"], size=(96, 96), mode="bilinear")
    model = _seg_model().train()
    attach(model)
    masks_seen: list[Tensor] = []
    original = model.dense_contrast.forward
    model.dense_contrast.forward = lambda f, m: (masks_seen.append(m), original(f, m))[1]
    _, items = _step(model, batch)
    assert torch.isfinite(items[LOSS_KEY]) and items[LOSS_KEY] > 0
    masks, boxes = batch_instances(batches[True], 4, overlap_mask=True)
    assert torch.equal(masks_seen[0], gt_box_rois(torch.zeros(4, 1, 24, 24), masks, boxes).masks)


def test_batch_instances_rejects_a_mismatched_layout(batches: dict[bool, dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match=r"overlap_mask=True expects one index map per image"):
        batch_instances(batches[False], 4, overlap_mask=True)
    with pytest.raises(ValueError, match=r"overlap_mask=False expects one mask per instance"):
        batch_instances(batches[True], 4, overlap_mask=False)
    with pytest.raises(ValueError, match="no 'masks'"):
        batch_instances({"bboxes": torch.zeros(0, 4), "batch_idx": torch.zeros(0)}, 1, overlap_mask=True)


def test_per_instance_masks_read_as_index_maps_are_refused_when_counts_match() -> None:
    # Two images, two instances, both in image 0: per-instance masks have the shape of index maps.
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[0, 2:6, 2:6] = 1
    masks[1, 8:12, 8:14] = 1
    batch = {"masks": masks, "bboxes": torch.full((2, 4), 0.25), "batch_idx": torch.tensor([0.0, 0.0])}
    with pytest.raises(ValueError, match=r"batch\['masks'\]\[1\] has values up to 1 but image 1 has 0 inst.*"
                       r"per-instance.*overlap_mask=False"):  # fmt: skip
        batch_instances(batch, 2, overlap_mask=True)
    per_instance, _ = batch_instances(batch, 2, overlap_mask=False)
    assert [m.shape[0] for m in per_instance] == [2, 0]
    # The same layout read right: index maps whose values stay within each image's count.
    maps = torch.zeros(2, 16, 16, dtype=torch.uint8)
    maps[0] = masks[0] + 2 * masks[1]
    index, _ = batch_instances({**batch, "masks": maps}, 2, overlap_mask=True)
    assert torch.equal(index[0], per_instance[0].bool())


# ---------------------------------------------------------------- eval and predict are untouched


def _nested_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_nested_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_train_and_eval_outputs_of_an_image_tensor_are_bit_identical(
    batches: dict[bool, dict[str, Any]],
) -> None:
    images = batches[True]["img"]
    model = _seg_model()
    # Raw training-mode predictions of an image tensor (two copies: such a call updates BN statistics).
    plain, attached = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    attach(attached)
    with torch.no_grad():
        assert _nested_equal(plain(images), attached(images))
    # Eval mode.
    model.eval()
    with torch.no_grad():
        before = model(images)
        handle = attach(model)
        after = model(images)
    assert _nested_equal(before, after) and handle.pending_steps == 0
    handle.remove()
    assert _hook_count(model) == 0 and not hasattr(model, SUBMODULE_NAME)


def test_predict_outputs_are_bit_identical(batches: dict[bool, dict[str, Any]], yolo_wrapper: Any) -> None:
    """Ultralytics' predictor (which fuses the model in place on first use) gives the same boxes and masks
    with the loss attached."""
    import numpy as np

    yolo = yolo_wrapper
    images = batches[True]["img"]
    array = np.ascontiguousarray((images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    kwargs = {"imgsz": IMGSZ, "device": "cpu", "verbose": False, "conf": 0.0, "max_det": 5}
    before_pred = yolo.predict(array, **kwargs)[0]
    handle = attach(yolo.model)
    after_pred = yolo.predict(array, **kwargs)[0]
    assert before_pred.masks is not None and len(before_pred.boxes) > 0
    assert torch.equal(before_pred.boxes.data, after_pred.boxes.data)
    assert torch.equal(before_pred.masks.data, after_pred.masks.data)
    handle.remove()
    assert _hook_count(yolo.model) == 0 and not hasattr(yolo.model, SUBMODULE_NAME)


# ---------------------------------------------------------------- variants of the head and features


def test_proto_input_features(batches: dict[bool, dict[str, Any]]) -> None:
    model = _seg_model().train()
    handle = attach(model, features="proto_input", k=8, tau=0.1, margin=0.1, output_size=(14, 12))
    assert model.dense_contrast.projector.in_channels == model.model[-1].proto.cv3.conv.in_channels == 64
    assert (model.dense_contrast.k, model.dense_contrast.tau) == (8, 0.1)
    loss, items = _step(model, batches[True])
    assert torch.isfinite(items[LOSS_KEY]) and items[LOSS_KEY] > 0
    loss[-1].backward()
    assert model.model[-1].proto.cv2.conv.weight.grad.abs().sum() > 0
    last = model.model[-1].proto.cv3.conv.weight.grad  # the tap sits before the last conv
    assert last is None or torch.count_nonzero(last) == 0
    assert "features='proto_input'" in repr(handle)


@pytest.mark.parametrize("yaml", ["yolo11n-seg.yaml", "yolo26n-seg.yaml"])
def test_other_yolo_seg_generations(yaml: str, batches: dict[bool, dict[str, Any]]) -> None:
    """YOLO11-seg, and YOLO26-seg whose Proto26 returns (prototypes, semantic logits) in training: the
    loss takes the prototypes."""
    model = _seg_model(yaml).train()
    attach(model)
    loss, items = _step(model, batches[True])
    assert LOSS_KEY in items and torch.isfinite(items[LOSS_KEY]) and items[LOSS_KEY] > 0
    assert loss.shape[0] == len(items)


def test_no_instances_gives_a_zero_in_the_graph(batches: dict[bool, dict[str, Any]]) -> None:
    model = _seg_model(overlap_mask=False).train()
    attach(model)
    batch = dict(batches[False])
    batch.update(
        masks=batch["masks"][:0],
        bboxes=batch["bboxes"][:0],
        batch_idx=batch["batch_idx"][:0],
        cls=batch["cls"][:0],
    )
    loss, items = _step(model, batch)
    assert items[LOSS_KEY] == 0
    grads = torch.autograd.grad(loss[-1], list(model.dense_contrast.parameters()))
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


def test_custom_criterion_and_removal(batches: dict[bool, dict[str, Any]]) -> None:
    class Mean(nn.Module):
        def forward(self, feats: Tensor, masks: Tensor) -> Tensor:
            return feats.float().mean() + 0 * masks.float().sum()

    model = _seg_model().train()
    with attach(model, Mean(), weight=2.0) as handle:
        assert isinstance(handle, DenseContrastHandle) and get_handle(model) is handle
        _, items = _step(model, batches[True])
        assert torch.isfinite(items[LOSS_KEY])
    assert _hook_count(model) == 0 and SUBMODULE_NAME not in model._modules and get_handle(model) is None


def test_an_exception_mid_step_releases_the_captured_prototypes(batches: dict[bool, dict[str, Any]]) -> None:
    model = _seg_model().train()
    handle = attach(model)
    refs: list[weakref.ref[Tensor]] = []
    tap = model.model[-1].proto.register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))

    def explode(*args: Any) -> None:
        raise RuntimeError("bad target (simulated)")

    model.criterion = model.init_criterion()
    model.criterion.loss = explode
    with pytest.raises(RuntimeError, match="simulated") as raised:
        model(batches[True])
    del raised  # its traceback holds the step's frames
    tap.remove()
    assert len(refs) == 1 and is_released(refs[0]), "the interrupted step's prototypes are still referenced"
    assert handle.pending_steps == 0


def test_deepcopy_carries_its_own_handle(step: dict[str, Any]) -> None:
    clone = copy.deepcopy(step["model"])
    handle = get_handle(clone)
    assert handle is not None and handle is not step["handle"] and handle.model is clone
    handle.remove()
    assert step["handle"].attached and _hook_count(clone) == 0


# ---------------------------------------------------------------- refusals


def test_refuses_what_cannot_work(yolo_wrapper: Any) -> None:
    with pytest.raises(ValueError, match=r"no prototype module.*detection-only"):
        attach(DetectionModel("yolov8n.yaml", nc=2, verbose=False))
    with pytest.raises(TypeError, match="trainer=DenseContrastSegmentationTrainer"):
        attach(yolo_wrapper)
    with pytest.raises(ValueError, match="not an Ultralytics YOLO model"):
        attach(nn.Linear(2, 2))
    model = _seg_model()
    with pytest.raises(TypeError, match="attach to the eager model first"):
        attach(torch.compile(model))
    with pytest.raises(TypeError, match="attach to the inner model before wrapping"):
        attach(nn.DataParallel(model))
    for kwargs, error, match in [
        ({"weight": -1.0}, ValueError, "weight must be"),
        ({"features": "neck"}, ValueError, "features must be one of"),
        ({"margin": -0.5}, ValueError, "margin must be"),
        ({"output_size": 0}, ValueError, "output_size must be"),
        ({"overlap_mask": 1}, TypeError, "overlap_mask must be"),
        ({"criterion": DenseContrastiveLoss(), "k": 8}, ValueError, "k and tau configure"),
    ]:
        with pytest.raises(error, match=match):
            attach(model, **kwargs)
    assert _hook_count(model) == 0 and SUBMODULE_NAME not in model._modules
    handle = attach(model)
    with pytest.raises(ValueError, match="attached twice"):
        attach(model)
    handle.remove()


def test_trainer_refuses_compile(data_yaml: pathlib.Path, tmp_path: pathlib.Path) -> None:
    overrides = {"model": "yolov8n-seg.yaml", "data": str(data_yaml), "compile": True,
                 "project": str(tmp_path), "plots": False}  # fmt: skip
    with pytest.raises(ValueError, match="compile=True is not supported"):
        DenseContrastSegmentationTrainer(overrides=overrides)
    with pytest.raises(ValueError, match="unknown options"):
        DenseContrastSegmentationTrainer.with_options(lambda_=2.0)
    custom = DenseContrastSegmentationTrainer.with_options(weight=2.0, margin=0.1)
    assert issubclass(custom, DenseContrastSegmentationTrainer)
    assert (custom.dcl_weight, custom.dcl_margin, custom.dcl_k) == (2.0, 0.1, None)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"weight": -1}, ValueError, "weight must be"),
        ({"weight": "1"}, TypeError, "weight must be"),
        ({"features": "neck"}, ValueError, "features must be one of"),
        ({"margin": "a"}, TypeError, "margin must be"),
        ({"output_size": 28.0}, TypeError, "output_size must be"),
        ({"ignore_band": 0.9}, ValueError, "ignore_band must be"),
        ({"k": 0}, ValueError, "k"),
        ({"tau": -0.1}, ValueError, "tau"),
    ],
)
def test_trainer_options_are_checked_up_front(
    options: dict[str, Any],
    error: type[Exception],
    match: str,
    data_yaml: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    with pytest.raises(error, match=match):
        DenseContrastSegmentationTrainer.with_options(**options)
    # A subclass that sets the attribute itself fails before Ultralytics builds anything.
    bad = type("Bad", (DenseContrastSegmentationTrainer,), {f"dcl_{k}": v for k, v in options.items()})
    overrides = {
        "model": "yolov8n-seg.yaml",
        "data": str(data_yaml),
        "project": str(tmp_path),
        "plots": False,
    }
    with pytest.raises(error, match=match):
        bad(overrides=overrides)
    assert not any(tmp_path.iterdir()), "the trainer made its run directory before refusing"


# ---------------------------------------------------------------- Ultralytics' own training loop

_LOAD_WITHOUT_DENSECONTRAST = """
import sys
sys.modules["densecontrast"] = None  # any reference to the package in the pickle fails to load
import torch
names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
for path in sys.argv[1:]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        model = ckpt.get(key)
        if model is None:
            continue
        assert not hasattr(model, "dense_contrast") and not hasattr(model, "_densecontrast_handle"), key
        assert sum(len(getattr(m, n)) for m in model.modules() for n in names) == 0, key
        assert all("dense_contrast" not in k for k in model.state_dict()), key
from ultralytics import YOLO
yolo = YOLO(sys.argv[1])
print("loaded", yolo.task, type(yolo.model).__name__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("overlap_mask", [True, False])
def test_train_two_epochs_writes_dcl_loss_and_plain_checkpoints(
    data_yaml: pathlib.Path, tmp_path: pathlib.Path, overlap_mask: bool
) -> None:
    from ultralytics import YOLO

    yolo = YOLO("yolov8n-seg.yaml")
    yolo.train(
        data=str(data_yaml), epochs=2, imgsz=IMGSZ, batch=2, workers=0, device="cpu", plots=False,
        amp=False, project=str(tmp_path), name="run", exist_ok=True, verbose=False, seed=0,
        overlap_mask=overlap_mask, save_period=1, trainer=DenseContrastSegmentationTrainer,
    )  # fmt: skip
    run = tmp_path / "run"
    header, *rows = (run / "results.csv").read_text().strip().splitlines()
    columns = header.split(",")
    assert "train/dcl_loss" in columns and "val/dcl_loss" in columns and len(rows) == 2
    dcl = [float(r.split(",")[columns.index("train/dcl_loss")]) for r in rows]
    assert all(v > 0 and v == v and v != float("inf") for v in dcl)
    weights = sorted((run / "weights").glob("*.pt"))
    assert {p.name for p in weights} >= {"last.pt", "best.pt", "epoch1.pt"}
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_DENSECONTRAST, *map(str, weights)],
        capture_output=True, text=True, env=env, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded segment SegmentationModel" in proc.stdout


class _Interrupt(Exception):
    """Raised from a callback to stop a run the way a crash would, leaving a resumable last.pt."""


def _interrupt(trainer: Any) -> None:
    raise _Interrupt


@pytest.mark.slow
def test_resume_restores_the_projector_and_plain_resume_runs(
    data_yaml: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from ultralytics import YOLO

    yolo = YOLO("yolov8n-seg.yaml")
    yolo.add_callback("on_model_save", _interrupt)  # after epoch 1 of 2 is saved
    with pytest.raises(_Interrupt):
        yolo.train(
            data=str(data_yaml), epochs=2, imgsz=IMGSZ, batch=2, workers=0, device="cpu", plots=False,
            amp=False, val=False, project=str(tmp_path), name="run", exist_ok=True, verbose=False, seed=0,
            trainer=DenseContrastSegmentationTrainer,
        )  # fmt: skip
    last = tmp_path / "run" / "weights" / "last.pt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    saved = ckpt["optimizer"]["densecontrast"]
    assert not hasattr(ckpt["ema"], SUBMODULE_NAME)  # the inference weights stay plain YOLO
    assert len(ckpt["optimizer"]["param_groups"]) == 3  # Ultralytics' own groups, as a plain run has
    assert saved["criterion"] and saved["state"]  # the projector's weights and its AdamW moments

    seen: dict[str, Any] = {}

    def record(trainer: Any) -> None:
        crit = trainer.model.dense_contrast
        seen["weights"] = {k: v.clone() for k, v in crit.state_dict().items()}
        params = [p for g in trainer.optimizer.param_groups[3:] for p in g["params"]]
        seen["moments"] = [trainer.optimizer.state[p]["exp_avg"].clone() for p in params]
        raise _Interrupt

    resumed = YOLO(str(last))
    resumed.add_callback("on_train_epoch_start", record)
    with pytest.raises(_Interrupt):
        resumed.train(resume=True, trainer=DenseContrastSegmentationTrainer)
    for key, value in saved["criterion"].items():
        torch.testing.assert_close(seen["weights"][key], value, rtol=0, atol=0)
    expected = [saved["state"][i]["exp_avg"] for g in saved["param_groups"] for i in g["params"]]
    assert len(seen["moments"]) == len(expected) == 4
    for got, want in zip(seen["moments"], expected):
        torch.testing.assert_close(got, want.float(), rtol=0, atol=0)

    plain = YOLO(str(last))  # no trainer=: resumes as plain Ultralytics training
    plain.add_callback("on_train_epoch_start", _interrupt)
    with pytest.raises(_Interrupt):
        plain.train(resume=True)


# ---------------------------------------------------------------- dtypes and threads


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_attach_to_a_model_in_another_dtype_trains(
    batches: dict[bool, dict[str, Any]], dtype: torch.dtype
) -> None:
    model = _seg_model().to(dtype).train()
    attach(model)
    assert {p.dtype for p in model.dense_contrast.parameters()} == {dtype}
    batch = {**batches[True], "img": batches[True]["img"].to(dtype)}
    loss_vec, items = _step(model, batch)
    assert torch.isfinite(items[LOSS_KEY]) and items[LOSS_KEY] > 0
    loss_vec.sum().backward()
    grads = [p.grad for p in model.dense_contrast.parameters()]
    assert all(g is not None and g.dtype == dtype and torch.isfinite(g).all() for g in grads)


def test_one_model_stepped_from_two_threads_gives_every_step_its_own_loss(
    batches: dict[bool, dict[str, Any]],
) -> None:
    model = _seg_model().train()
    handle = attach(model)
    missing: list[int] = []

    def run(index: int) -> None:
        for _ in range(3):
            _, items = _step(model, batches[True])
            if LOSS_KEY not in items:
                missing.append(index)

    run_in_threads(run, range(2))
    assert not missing, missing
    assert handle.pending_steps == 0


def test_a_batch_without_masks_says_what_was_expected(batches: dict[bool, dict[str, Any]]) -> None:
    batch = {k: v for k, v in batches[True].items() if k != "masks"}
    with pytest.raises(
        ValueError, match=r"no 'masks'; expected Ultralytics' segmentation batch dict.*got keys"
    ):
        batch_instances(batch, 4, overlap_mask=True)
    bad = {**batches[True], "bboxes": batches[True]["bboxes"][:-1]}
    with pytest.raises(ValueError, match=r"one box per instance in batch\['bboxes'\], \(N, 4\) with N = \d+"):
        batch_instances(bad, 4, overlap_mask=True)


_GLOO_STEP = """
import os, sys
os.environ["YOLO_OFFLINE"] = "1"
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import SegmentationModel
from ultralytics.utils import DEFAULT_CFG
from densecontrast.adapters.ultralytics import LOSS_KEY, attach

rank, port = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
torch.manual_seed(0)
model = SegmentationModel("yolov8n-seg.yaml", nc=3, verbose=False).train()
model.args = get_cfg(DEFAULT_CFG)
handle = attach(model, weight=0.5, margin=0.5)
ddp = DistributedDataParallel(model)
g = torch.Generator().manual_seed(rank + 1)
masks = torch.zeros(2, 16, 16)
masks[:, 2:9, 3:12] = 1
masks[:, 10:15, 8:15] = 2
batch = {
    "img": torch.rand(2, 3, 64, 64, generator=g),
    "masks": masks,
    "bboxes": torch.tensor([[7.5, 5.5, 9, 7], [11.5, 12.5, 7, 5]] * 2) / 16,
    "batch_idx": torch.tensor([0.0, 0.0, 1.0, 1.0]),
    "cls": torch.tensor([[0.0], [1.0], [2.0], [0.0]]),
}
for step in range(2):
    loss_vec, items = ddp(batch)
    loss_vec.sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.dense_contrast.parameters()])
    both = [torch.zeros_like(grads) for _ in range(2)]
    dist.all_gather(both, grads)
    terms = [torch.zeros(()) for _ in range(2)]
    dist.all_gather(terms, items[LOSS_KEY].reshape(()))
    model.zero_grad()
    assert terms[0] > 0 and terms[1] > 0 and terms[0] != terms[1], terms  # each rank its own batch
    assert torch.equal(both[0], both[1]) and both[0].abs().sum() > 0  # gradients all-reduced
assert handle.pending_steps == 0
print("OK", rank)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo_train_the_attached_model(tmp_path: pathlib.Path) -> None:
    """Two processes step one attached yolov8n-seg each, wrapped in DistributedDataParallel (gloo): every
    parameter of the loss takes part in the reduction and the projector's gradients agree."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _GLOO_STEP, str(rank), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for rank, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"OK {rank}" in out, err[-3000:]


@pytest.mark.slow
def test_ddp_worker_file_rebuilds_a_with_options_trainer_and_the_attached_model(
    data_yaml: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Ultralytics launches DDP workers from a generated file that unpickles the trainer class and the
    model (cloudpickle): the options of a with_options class and the attached loss arrive intact."""
    from ultralytics.utils.dist import generate_ddp_file

    cls = DenseContrastSegmentationTrainer.with_options(weight=0.3, margin=0.1)
    trainer = cls(
        overrides={
            "model": "yolov8n-seg.yaml", "data": str(data_yaml), "imgsz": IMGSZ, "epochs": 1,
            "batch": 2, "device": "cpu", "workers": 0, "plots": False, "amp": False,
            "project": str(tmp_path), "name": "r",
        }
    )  # fmt: skip
    trainer.model = trainer.get_model(cfg="yolov8n-seg.yaml", verbose=False)
    path = pathlib.Path(generate_ddp_file(trainer))
    try:
        source = path.read_text()
        assert source.count("trainer.train()") == 1
        report = (
            "    from densecontrast.adapters.ultralytics import get_handle\n"
            "    h = get_handle(trainer.model)\n"
            "    print('WORKER', type(trainer).__name__, trainer.dcl_weight, trainer.dcl_margin,\n"
            "          h.weight, h.margin)\n"
        )
        path.write_text(source.replace("    trainer.train()\n", report))  # everything but the CUDA launch
        env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run(
            [sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=300, check=False
        )
    finally:
        path.unlink(missing_ok=True)
        path.with_suffix(".pt").unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WORKER DenseContrastSegmentationTrainer 0.3 0.1 0.3 0.1" in proc.stdout
