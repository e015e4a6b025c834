"""Tests of densecontrast.adapters.torchvision on real (randomly initialised) torchvision Mask R-CNN models.

The models are torchvision's ``MaskRCNN`` with every standard part, made narrow (``tests/_models.py``:
32-channel FPN and mask head) and fed 64 x 80 images with few proposals, so a training step is cheap on
CPU. One test runs the standard ResNet-50 FPN model and checks the recomputed mask targets against
torchvision's own mask loss bit for bit.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

tv_detection = pytest.importorskip("torchvision.models.detection")

from _helpers import RecordingCriterion, is_released, run_in_threads  # noqa: E402
from _models import TINY_CHANNELS, tiny_maskrcnn  # noqa: E402

from densecontrast import DenseContrastiveLoss  # noqa: E402
from densecontrast.adapters.torchvision import (  # noqa: E402
    LOSS_KEY,
    SUBMODULE_NAME,
    DenseContrastHandle,
    attach,
    get_handle,
    masks_from_soft,
    match_positives,
    positive_mask_targets,
    project_masks,
)
from densecontrast.taps import FeatureTap  # noqa: E402

NUM_CLASSES = 4
H, W = 64, 80
SMALL = {
    "min_size": 64,
    "max_size": 96,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 8,
}
BASE_LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def _instance(box: tuple[int, int, int, int], ellipse: bool) -> Tensor:
    x1, y1, x2, y2 = box
    mask = torch.zeros(H, W, dtype=torch.uint8)
    if ellipse:
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        cy, cx, ry, rx = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2, (y2 - y1) / 2, (x2 - x1) / 2
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    else:
        mask[y1:y2, x1:x2] = 1
    return mask


def _target(boxes: list[tuple[int, int, int, int]], labels: list[int]) -> dict[str, Tensor]:
    masks = [_instance(b, ellipse=i % 2 == 0) for i, b in enumerate(boxes)]
    tight = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        tight.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {
        "boxes": torch.tensor(tight, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.uint8),
    }


def _batch(seed: int = 0) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, H, W, generator=g) for _ in range(2)]
    targets = [
        _target([(6, 4, 40, 36), (30, 24, 74, 60), (50, 2, 78, 30)], [1, 2, 3]),
        _target([(10, 10, 60, 50), (20, 30, 50, 62)], [3, 1]),
    ]
    return images, targets


def _empty_batch() -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    images, _ = _batch(1)
    return images, [_target([], []), _target([], [])]


def _hook_dicts(module: nn.Module) -> list[dict[Any, Any]]:
    names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_backward_hooks",
        "_backward_pre_hooks",
    )
    return [getattr(module, n) for n in names if hasattr(module, n)]


def _hook_free(model: nn.Module) -> bool:
    return all(not d for m in model.modules() for d in _hook_dicts(m))


@pytest.fixture(scope="module")
def base() -> nn.Module:
    torch.manual_seed(0)
    return tiny_maskrcnn(NUM_CLASSES, **SMALL)


@pytest.fixture
def fresh(base: nn.Module) -> nn.Module:
    return copy.deepcopy(base).train()


def _tapped_step(model: nn.Module) -> dict[str, Any]:
    """One training step of ``model`` attached, with torchvision's own inputs and logits tapped."""
    handle = attach(model)
    images, targets = _batch()
    with (
        FeatureTap.on(model, "roi_heads", what="args") as heads_in,
        FeatureTap.on(model, "roi_heads.mask_roi_pool", what="args") as pool_in,
        FeatureTap.on(model, "roi_heads.mask_predictor.mask_fcn_logits") as logits_tap,
    ):
        losses = model(images, targets)
        heads_args, pool_args, logits = heads_in.pop(), pool_in.pop(), logits_tap.pop()
    losses[LOSS_KEY].backward()
    return {
        "model": model,
        "handle": handle,
        "losses": losses,
        "targets": heads_args[3],
        "proposals": pool_args[1],
        "logits": logits,
    }


@pytest.fixture(scope="module")
def step(base: nn.Module) -> dict[str, Any]:
    return _tapped_step(copy.deepcopy(base).train())


# ---------------------------------------------------------------- helpers: matching and mask targets


def test_match_positives_takes_the_best_iou_first_on_ties() -> None:
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    boxes = torch.tensor([[21.0, 21, 30, 30], [0, 0, 9, 10], [1, 0, 10, 10]])
    assert match_positives(gt, boxes).tolist() == [1, 0, 0]
    assert match_positives(gt, boxes[:0]).shape == (0,)
    with pytest.raises(ValueError, match="gt_boxes is empty"):
        match_positives(gt[:0], boxes)


def test_project_masks_inside_and_outside_the_instance() -> None:
    mask = torch.zeros(2, 32, 32, dtype=torch.uint8)
    mask[0, 8:24, 8:24] = 1
    mask[1, 0:4, 0:4] = 1
    boxes = torch.tensor([[10.0, 10, 20, 20], [26, 26, 31, 31], [10, 10, 20, 20]])
    soft = project_masks(mask, boxes, torch.tensor([0, 0, 1]), (7, 5))
    assert soft.shape == (3, 7, 5)
    assert torch.equal(soft[0], torch.ones(7, 5))  # box inside instance 0
    assert torch.equal(soft[1], torch.zeros(7, 5))  # box in the background
    assert torch.equal(soft[2], torch.zeros(7, 5))  # same box, matched to instance 1 far away


def test_project_masks_equals_torchvision_mask_targets() -> None:
    from torchvision.models.detection.roi_heads import project_masks_on_boxes

    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 40, 50, generator=g) > 0.5).to(torch.uint8)
    xy = torch.rand(20, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + 2 + torch.rand(20, 2, generator=g) * 18], dim=1)
    matched = torch.randint(0, 3, (20,), generator=g)
    expected = project_masks_on_boxes(masks, boxes, matched, 28)
    assert torch.equal(project_masks(masks, boxes, matched, (28, 28)), expected)


def test_masks_from_soft_threshold_and_band() -> None:
    soft = torch.tensor([[[0.0, 0.49, 0.5, 0.51, 0.8, 1.0]]])
    hard = masks_from_soft(soft)
    assert hard.dtype == torch.bool
    assert hard.int().tolist() == [[[0, 0, 1, 1, 1, 1]]]
    banded = masks_from_soft(soft, ignore_band=0.25)
    assert banded.dtype == torch.int8
    assert banded.tolist() == [[[0, -1, -1, -1, 1, 1]]]


def test_positive_mask_targets_rejects_mismatched_batches() -> None:
    _, targets = _batch()
    with pytest.raises(ValueError, match="one entry per image"):
        positive_mask_targets(targets, [torch.zeros(0, 4)], (28, 28))


# ---------------------------------------------------------------- a real training step


def test_losses_present_and_finite(step: dict[str, Any]) -> None:
    losses = step["losses"]
    assert set(losses) == BASE_LOSSES | {LOSS_KEY}
    for name, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), name
    assert losses[LOSS_KEY] > 0


def test_default_criterion_is_a_learnable_dcl_submodule(step: dict[str, Any]) -> None:
    model, handle = step["model"], step["handle"]
    crit = getattr(model, SUBMODULE_NAME)
    assert crit is handle.criterion and isinstance(crit, DenseContrastiveLoss)
    assert (crit.k, crit.tau, handle.weight) == (32, 0.07, 0.3)
    assert crit.projector is not None and crit.projector.in_channels == TINY_CHANNELS
    names = {n for n, _ in model.named_parameters()}
    assert {f"{SUBMODULE_NAME}.projector.fc1.weight", f"{SUBMODULE_NAME}.projector.fc2.bias"} <= names
    assert get_handle(model) is handle


def test_the_handle_tells_how_many_rois_the_step_used_and_how_many_counted(step: dict[str, Any]) -> None:
    handle, proposals = step["handle"], step["proposals"]
    assert handle.last_num_rois == sum(len(p) for p in proposals) > 0
    assert torch.equal(handle.last_loss, step["losses"][LOSS_KEY].detach())
    if not hasattr(handle.criterion, "last_valid_rois"):
        pytest.skip("this DenseContrastiveLoss does not report last_valid_rois")
    valid = handle.last_valid_rois
    assert valid is not None and valid.dtype == torch.int64 and valid.ndim == 0
    assert 0 < int(valid) <= handle.last_num_rois


def test_gradients_of_loss_dcl_reach_mask_head_and_projector(step: dict[str, Any]) -> None:
    model = step["model"]
    for name, module in (
        ("projector", model.dense_contrast.projector),
        ("mask_head", model.roi_heads.mask_head),
    ):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # loss_dcl alone was backpropagated: the box predictor and the mask logits conv are untouched.
    assert all(p.grad is None for p in model.roi_heads.box_predictor.parameters())
    assert all(p.grad is None for p in model.roi_heads.mask_predictor.mask_fcn_logits.parameters())


def _assert_targets_reproduce_mask_loss(step: dict[str, Any]) -> None:
    logits = step["logits"]
    soft, labels = positive_mask_targets(step["targets"], step["proposals"], tuple(logits.shape[-2:]))
    assert soft.shape == (logits.shape[0], 28, 28) and logits.shape[0] >= 5
    assert set(labels.tolist()) == {1, 2, 3}
    ours = F.binary_cross_entropy_with_logits(logits[torch.arange(labels.shape[0]), labels], soft)
    torch.testing.assert_close(ours, step["losses"]["loss_mask"], rtol=0, atol=0)


def test_recomputed_targets_reproduce_torchvision_mask_loss(step: dict[str, Any]) -> None:
    _assert_targets_reproduce_mask_loss(step)


@pytest.mark.slow
def test_resnet50_fpn_step_bit_exact() -> None:
    """The standard R50-FPN model (the one bit-exact test on it): the default criterion reads its 256
    channels, loss_dcl is finite, and the recomputed targets give torchvision's loss_mask exactly."""
    torch.manual_seed(0)
    model = tv_detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **SMALL
    )
    model.backbone.body.requires_grad_(False)
    step = _tapped_step(model.train())
    assert model.dense_contrast.projector.in_channels == 256
    assert set(step["losses"]) == BASE_LOSSES | {LOSS_KEY} and torch.isfinite(step["losses"][LOSS_KEY])
    _assert_targets_reproduce_mask_loss(step)
    assert all(p.grad is not None for p in model.dense_contrast.parameters())


def test_captures_are_cleared_after_the_step(step: dict[str, Any]) -> None:
    handle = step["handle"]
    assert handle.pending_steps == 0


# ---------------------------------------------------------------- eval, removal, state, copies


def test_eval_outputs_identical_and_remove_restores(base: nn.Module) -> None:
    images = _batch(3)[0][:1]
    base.eval()
    keys_before = list(base.state_dict())
    with torch.no_grad():
        plain = base(images)
        handle = attach(base)
        try:
            attached = base(images)
        finally:
            handle.remove()
    assert len(plain) == len(attached) == 1 and len(plain[0]["boxes"]) > 0
    for p, a in zip(plain, attached):
        assert set(p) == set(a) == {"boxes", "labels", "scores", "masks"}
        for key in p:
            assert torch.equal(p[key], a[key]), key
    assert not handle.attached and not hasattr(base, SUBMODULE_NAME) and get_handle(base) is None
    assert _hook_free(base)
    assert list(base.state_dict()) == keys_before
    handle.remove()  # idempotent


def test_context_manager_removes(fresh: nn.Module) -> None:
    with attach(fresh) as handle:
        assert isinstance(handle, DenseContrastHandle) and handle.attached
        assert not _hook_free(fresh)
    assert _hook_free(fresh) and SUBMODULE_NAME not in fresh._modules


def test_state_dict_round_trip(base: nn.Module) -> None:
    src, dst = copy.deepcopy(base), copy.deepcopy(base)
    attach(src), attach(dst)
    with torch.no_grad():
        for p in src.dense_contrast.parameters():
            p.normal_()
    state = src.state_dict()
    assert any(k.startswith(f"{SUBMODULE_NAME}.projector.") for k in state)
    dst.load_state_dict(state)
    for (name, a), b in zip(
        src.dense_contrast.state_dict().items(), dst.dense_contrast.state_dict().values()
    ):
        assert torch.equal(a, b), name


def test_deepcopy_hooks_follow_the_copy(step: dict[str, Any]) -> None:
    original = step["model"]
    clone = copy.deepcopy(original)
    handle = get_handle(clone)
    assert handle is not None and handle is not step["handle"]
    assert handle.model is clone and handle.criterion is clone.dense_contrast
    assert handle.layer is clone.roi_heads.mask_predictor.mask_fcn_logits
    for hook in [*clone.roi_heads._forward_hooks.values(), *clone.roi_heads._forward_pre_hooks.values()]:
        assert getattr(hook.__self__, "handle", hook.__self__) is handle  # bound to the copy's handle
    images, targets = _batch(5)
    loss = clone(images, targets)[LOSS_KEY]
    mine = list(clone.dense_contrast.parameters())
    theirs = list(original.dense_contrast.parameters())
    grads = torch.autograd.grad(loss, mine + theirs, allow_unused=True)
    assert all(g is not None for g in grads[: len(mine)])
    assert all(g is None for g in grads[len(mine) :])
    handle.remove()
    assert _hook_free(clone) and step["handle"].attached


# ---------------------------------------------------------------- edge cases


def test_no_instances_gives_a_zero_in_the_graph(fresh: nn.Module) -> None:
    attach(fresh)
    images, targets = _empty_batch()
    losses = fresh(images, targets)
    loss = losses[LOSS_KEY]
    assert torch.isfinite(loss) and loss.item() == 0.0
    params = list(fresh.dense_contrast.parameters())
    grads = torch.autograd.grad(loss, params)
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


def test_autocast_bf16_cpu(fresh: nn.Module) -> None:
    attach(fresh)
    images, targets = _batch(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # one image: bf16 convolutions are slow on CPU
        losses = fresh(images[:1], targets[:1])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses[LOSS_KEY] > 0
    grads = torch.autograd.grad(losses[LOSS_KEY], list(fresh.dense_contrast.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_custom_criterion_gets_feats_and_thresholded_masks(fresh: nn.Module) -> None:
    recorder = RecordingCriterion()
    handle = attach(fresh, recorder, weight=0.5, ignore_band=0.2)
    assert fresh.dense_contrast is recorder
    images, targets = _batch(11)
    with (
        FeatureTap.on(fresh, "roi_heads", what="args") as heads_in,
        FeatureTap.on(fresh, "roi_heads.mask_roi_pool", what="args") as pool_in,
        FeatureTap.on(fresh, "roi_heads.mask_predictor.relu") as relu_out,
    ):
        losses = fresh(images, targets)
        proposals, feats_ref = pool_in.pop()[1], relu_out.pop()
        soft, _ = positive_mask_targets(heads_in.pop()[3], proposals, (28, 28))
    (feats, masks), *rest = recorder.seen
    assert not rest
    assert torch.equal(feats, feats_ref.detach()) and (feats >= 0).all()
    assert feats.shape == (sum(len(p) for p in proposals), TINY_CHANNELS, 28, 28)
    assert torch.equal(masks, masks_from_soft(soft, ignore_band=0.2))
    assert (masks == -1).any() and (masks == 1).any() and (masks == 0).any()
    torch.testing.assert_close(losses[LOSS_KEY], 0.5 * feats.float().pow(2).mean())
    handle.remove()
    assert SUBMODULE_NAME not in fresh._modules


class _CustomPredictor(nn.Module):
    """A predictor without ``mask_fcn_logits``, with a module it never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(TINY_CHANNELS, 32, 2, 2)
        self.logits = nn.Conv2d(32, NUM_CLASSES, 1)
        self.spare = nn.Conv2d(32, 32, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(F.relu(self.up(x)))


def test_layer_override_for_a_custom_predictor(fresh: nn.Module) -> None:
    fresh.roi_heads.mask_predictor = _CustomPredictor()
    with pytest.raises(ValueError, match=r"has no .*mask_fcn_logits.*layer="):
        attach(fresh)
    images, targets = _batch(13)
    handle = attach(fresh, layer="roi_heads.mask_predictor.spare")
    with pytest.raises(RuntimeError, match=r"spare.*never called.*pass layer="):
        fresh(images, targets)
    assert handle.pending_steps == 0  # cleared despite the error
    handle.remove()
    handle = attach(fresh, layer=fresh.roi_heads.mask_predictor.logits, k=8, tau=0.2)
    assert fresh.dense_contrast.projector.in_channels == 32 and fresh.dense_contrast.k == 8
    losses = fresh(images, targets)
    assert torch.isfinite(losses[LOSS_KEY]) and losses[LOSS_KEY] > 0
    handle.remove()
    assert _hook_free(fresh)


def test_an_interrupted_step_leaves_no_captures(fresh: nn.Module) -> None:
    handle = attach(fresh)

    def explode(module: nn.Module, args: Any, output: Any) -> None:
        raise RuntimeError("mask head exploded")

    images, targets = _batch()
    fresh.roi_heads.mask_head.register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="mask head exploded"):
        fresh(images, targets)
    assert handle.pending_steps == 0


def test_an_exception_after_the_predictor_releases_the_step_graph(fresh: nn.Module) -> None:
    """The fast path computes the loss in the predictor's pre-hook; when the step then raises (an OOM, a
    bad target), the handle must not keep that loss, and with it the step's graph, alive."""
    handle = attach(fresh)
    crit = fresh.dense_contrast
    losses_seen: list[weakref.ref[Tensor]] = []
    passthrough = crit.forward_passthrough

    def recording_passthrough(feats: Tensor, masks: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        feats_out, loss = passthrough(feats, masks, **kwargs)
        losses_seen.append(weakref.ref(loss))
        return feats_out, loss

    crit.forward_passthrough = recording_passthrough  # an instance attribute: the class stays exact

    def explode(module: nn.Module, args: Any, output: Any) -> None:
        raise RuntimeError("out of memory (simulated)")

    boom = fresh.roi_heads.mask_predictor.mask_fcn_logits.register_forward_hook(explode)
    images, targets = _batch()
    with pytest.raises(RuntimeError, match="simulated") as raised:
        fresh(images, targets)
    del raised  # its traceback holds the step's frames
    boom.remove()
    assert len(losses_seen) == 1, "the fast path did not run: the test would prove nothing"
    assert is_released(losses_seen[0]), "the interrupted step's loss (and its graph) is still referenced"
    assert handle.pending_steps == 0
    # The next step runs normally.
    del crit.forward_passthrough
    assert torch.isfinite(fresh(images, targets)[LOSS_KEY])


# ---------------------------------------------------------------- bad arguments


class _NoMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.roi_heads = nn.Module()
        self.roi_heads.mask_roi_pool = None


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_bad_models(base: nn.Module) -> None:
    with pytest.raises(TypeError, match="model must be"):
        attach("maskrcnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no roi_heads"):
        attach(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no mask branch"):
        attach(_NoMask())
    with pytest.raises(TypeError, match="attach to the inner model before wrapping"):
        attach(nn.DataParallel(base))
    with pytest.raises(TypeError, match="attach to the eager model first, then compile"):
        attach(torch.compile(base))
    with pytest.raises(TypeError, match="ScriptModule"):
        attach(torch.jit.script(nn.Linear(2, 2)))
    assert _hook_free(base) and SUBMODULE_NAME not in base._modules


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weight": -1.0}, ValueError, "weight must be a finite non-negative"),
        ({"weight": float("nan")}, ValueError, "weight must be a finite non-negative"),
        ({"weight": "1.2"}, TypeError, "weight must be a finite non-negative"),
        ({"k": 0}, ValueError, "k must be a positive int"),
        ({"tau": 0.0}, ValueError, "tau must be a finite positive"),
        ({"ignore_band": 0.7}, ValueError, "ignore_band must be"),
        ({"ignore_band": "x"}, TypeError, "ignore_band must be"),
        ({"layer": "roi_heads.mask_predictor.mask_fcn_logit"}, ValueError, "close matches.*mask_fcn_logits"),
        ({"layer": "backbone.fpn"}, ValueError, "inside model.roi_heads"),
        ({"layer": 3}, TypeError, "layer must be None"),
        ({"layer": "roi_heads.mask_predictor.relu"}, ValueError, "pass criterion="),
        ({"criterion": lambda f, m: f.sum()}, TypeError, "criterion must be an nn.Module"),
        ({"criterion": DenseContrastiveLoss(), "k": 16}, ValueError, r"k and tau.*k=16, tau=None"),
        ({"criterion": DenseContrastiveLoss(), "tau": 0.1}, ValueError, r"k and tau.*k=None, tau=0.1"),
    ],
)
def test_bad_arguments(base: nn.Module, kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        attach(base, **kwargs)
    assert _hook_free(base) and SUBMODULE_NAME not in base._modules


def test_attaching_twice_is_refused(fresh: nn.Module) -> None:
    handle = attach(fresh)
    with pytest.raises(ValueError, match="attached twice"):
        attach(fresh)
    handle.remove()
    attach(fresh).remove()
    assert _hook_free(fresh)


class _GenericPathLoss(DenseContrastiveLoss):
    """The same loss, but not the exact class, so attach takes the generic (dense-gradient) path."""


def test_in_place_gradient_path_equals_the_generic_path(base: nn.Module) -> None:
    """The default criterion's fast path (loss computed where the features enter mask_fcn_logits, and
    its gradient added into the convolution's input gradient in place) gives the generic path's numbers."""
    results = []
    for criterion_cls in (DenseContrastiveLoss, _GenericPathLoss):
        model = copy.deepcopy(base).train()
        torch.manual_seed(7)
        criterion = criterion_cls(k=32, tau=0.07, in_channels=TINY_CHANNELS)
        attach(model, criterion)
        images, targets = _batch()
        torch.manual_seed(3)
        losses = model(images, targets)
        (losses[LOSS_KEY] + losses["loss_mask"]).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((losses[LOSS_KEY].detach(), losses["loss_mask"].detach(), grads))
    (fast, fast_mask, fast_grads), (generic, generic_mask, generic_grads) = results
    assert torch.equal(fast_mask, generic_mask)
    torch.testing.assert_close(fast, generic, rtol=1e-6, atol=1e-7)
    assert fast_grads.keys() == generic_grads.keys()
    assert any("mask_head" in n for n in fast_grads) and any("dense_contrast" in n for n in fast_grads)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], generic_grads[name], rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------- threads and dtypes


def test_one_model_stepped_from_two_threads_gives_every_step_its_loss(fresh: nn.Module) -> None:
    """A threaded loop (or nn.DataParallel's replicas) calls one attached model concurrently: each call
    keeps its own captures, so no step loses loss_dcl or sees another step's RoIs."""
    handle = attach(fresh)
    missing: list[int] = []

    def run(seed: int) -> None:
        for i in range(4):
            images, targets = _batch(seed + i) if seed == 0 else _empty_batch()
            losses = fresh(images, targets)
            if LOSS_KEY not in losses or not torch.isfinite(losses[LOSS_KEY]):
                missing.append(seed + i)

    run_in_threads(run, (0, 100))
    assert not missing and handle.pending_steps == 0


def test_attach_to_a_float64_model_trains_in_float64(base: nn.Module) -> None:
    model = copy.deepcopy(base).double().train()
    attach(model)
    assert {p.dtype for p in model.dense_contrast.parameters()} == {torch.float64}
    images, targets = _batch(2)
    losses = model([i.double() for i in images], targets)
    assert losses[LOSS_KEY].dtype == torch.float64 and losses[LOSS_KEY] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.dense_contrast.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attach_to_a_half_precision_model_puts_the_criterion_in_its_dtype(
    base: nn.Module, dtype: torch.dtype
) -> None:
    # A training step of a bf16/fp16 Mask R-CNN cannot run on CPU (torchvision's nms has no CPU kernel
    # for them); the step itself is covered by the Ultralytics tests and on GPU.
    model = copy.deepcopy(base).to(dtype)
    handle = attach(model)
    assert {p.dtype for p in model.dense_contrast.parameters()} == {dtype}
    feats = torch.randn(3, TINY_CHANNELS, 28, 28, dtype=dtype, requires_grad=True)
    masks = torch.zeros(3, 28, 28, dtype=torch.bool)
    masks[:, 5:20, 5:20] = True
    from densecontrast.adapters._base import Step

    term = handle.evaluate(Step(model, {}), feats, masks)
    assert torch.isfinite(term) and term > 0
    term.backward()
    assert feats.grad is not None and feats.grad.dtype == dtype
