"""Tests of examples/any_model.py: the loss on a custom one-stage model with FeatureTap and gt_box_rois."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from _helpers import load_example

pytest.importorskip("torchvision")

from densecontrast import DenseContrastiveLoss, FeatureTap
from densecontrast.adapters.rois import gt_box_rois
from densecontrast.datasets import SyntheticInstances


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("any_model")


def _batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    ds = SyntheticInstances(2, image_size=64, min_instances=2, max_instances=4, seed=3)
    images, targets = zip(*(ds[i] for i in range(2)))
    return torch.stack(images), list(targets)


def _parts(example: ModuleType) -> tuple[torch.nn.Module, FeatureTap, DenseContrastiveLoss]:
    torch.manual_seed(0)
    model = example.TinyOneStage(channels=16).train()
    tap = FeatureTap(model.mask_branch, what="output", training_only=True)
    return model, tap, DenseContrastiveLoss(k=16, tau=0.1, in_channels=16)


def test_train_step_adds_the_term_computed_on_gt_box_rois(example: ModuleType) -> None:
    model, tap, dcl = _parts(example)
    images, targets = _batch()
    frozen = torch.optim.SGD([*model.parameters(), *dcl.parameters()], lr=0.0)  # weights stay put
    torch.manual_seed(7)
    losses = example.train_step(model, tap, dcl, frozen, images, targets, weight=0.5, margin=0.2)
    assert set(losses) == {"loss_model", "loss_dcl"}
    assert torch.isfinite(losses["loss_dcl"]) and losses["loss_dcl"] > 0
    assert not tap.captured  # popped: no graph outlives the step
    # the same term by hand: the mask branch's output, GT-box RoIs with the margin, the loss, the weight
    feats = model.mask_branch(model.stem(images))
    rois = gt_box_rois(feats, [t["masks"] for t in targets], margin=0.2)
    assert rois.feats.shape[0] == sum(t["masks"].shape[0] for t in targets)
    torch.manual_seed(7)
    torch.testing.assert_close(losses["loss_dcl"], 0.5 * dcl(rois.feats, rois.masks))


def test_the_term_trains_the_mask_branch_and_the_projector_not_the_head(example: ModuleType) -> None:
    model, tap, dcl = _parts(example)
    images, targets = _batch()
    model(images)
    rois = gt_box_rois(tap.pop(), [t["masks"] for t in targets], margin=0.1)
    dcl(rois.feats, rois.masks).backward()
    for name, module in [("stem", model.stem), ("mask_branch", model.mask_branch), ("projector", dcl)]:
        grads = [p.grad for p in module.parameters()]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None for p in model.mask_head.parameters())


def test_eval_captures_nothing(example: ModuleType) -> None:
    model, tap, _ = _parts(example)
    model.eval()
    with torch.no_grad():
        model(_batch()[0])
    assert not tap.captured and tap.pop() is None


def test_main_runs(example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    example.main(["--steps", "2", "--batch-size", "2", "--image-size", "64"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("loss_dcl=" in line for line in lines)
