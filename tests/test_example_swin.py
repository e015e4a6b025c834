"""Tests of examples/maskrcnn_swin_t.py: torchvision Mask R-CNN on a Swin-T + FPN backbone with attach().

The training-step tests use a width-reduced Swin (embed_dim 16, one window of 4) on 64 x 64 images, which
keeps Swin-T's structure (four stages, shifted windows, patch merging) at a fraction of the cost.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from _helpers import load_example

pytest.importorskip("torchvision")

from densecontrast.adapters.torchvision import LOSS_KEY, attach
from densecontrast.datasets import SyntheticInstances

NUM_CLASSES = 4
TINY = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8), "window_size": 4}
SMALL = {
    "min_size": 64,
    "max_size": 64,
    "fpn_channels": 32,
    "mask_head_channels": 32,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 8,
}


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("maskrcnn_swin_t")


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    ds = SyntheticInstances(
        2, image_size=64, num_categories=NUM_CLASSES - 1, min_instances=2, max_instances=4
    )
    images, targets = zip(*(ds[i] for i in range(2)))
    return list(images), list(targets)


def _tiny_model(example: ModuleType) -> torch.nn.Module:
    torch.manual_seed(0)
    return example.maskrcnn_swin_t_fpn(NUM_CLASSES, **TINY, **SMALL)


def test_stages_are_channels_first_at_strides_4_to_32(example: ModuleType) -> None:
    torch.manual_seed(0)
    swin = example.SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2], window_size=[4, 4]
    )
    stages = example.SwinStages(swin)
    outs = stages(torch.rand(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6), (2, 64, 2, 3)]
    # stage 1 is swin.features[0:2] followed by the new norm, permuted from (B, H, W, C)
    stages.eval()  # no drop-path, so both runs compute the same thing
    image = torch.rand(1, 3, 32, 32)
    x = swin.features[1](swin.features[0](image))  # (1, 8, 8, 8) channels-last
    expected = torch.nn.functional.layer_norm(x, (8,), stages.norms[0].weight, stages.norms[0].bias, 1e-5)
    torch.testing.assert_close(stages(image)[0], expected.permute(0, 3, 1, 2))


@pytest.mark.slow
def test_default_shape_is_swin_t_and_loads_its_state_dict(example: ModuleType) -> None:
    model = example.maskrcnn_swin_t_fpn(91)
    assert model.backbone.body.channels == [96, 192, 384, 768]
    assert model.backbone.out_channels == 256
    assert model.roi_heads.mask_predictor.mask_fcn_logits.in_channels == 256
    # ImageNet weights of torchvision's swin_t load into the body unchanged (same keys and shapes)
    from torchvision.models import swin_t

    reference = swin_t(weights=None).features.state_dict()
    model.backbone.body.body.load_state_dict(reference)


def test_one_training_step_gives_finite_loss_dcl_with_gradients_into_swin(example: ModuleType) -> None:
    model = _tiny_model(example)
    handle = attach(model, weight=1.2)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {
        "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg", LOSS_KEY
    }  # fmt: skip
    assert losses[LOSS_KEY].ndim == 0 and torch.isfinite(losses[LOSS_KEY])
    assert losses[LOSS_KEY] > 0  # the RoIs hold enough instance and background pixels for K = 32
    losses[LOSS_KEY].backward()  # the dense contrastive term alone
    body = model.backbone.body.body
    for index in (0, 1, 3, 5, 7):  # patch embedding and the four stages
        grads = [p.grad for p in body[index].parameters()]
        assert grads and all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0, f"no gradient reached swin.features[{index}]"
    projector = list(model.dense_contrast.parameters())
    assert projector and all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector)
    handle.remove()
    assert not hasattr(model, "dense_contrast")


def test_eval_gives_detections_with_masks(example: ModuleType) -> None:
    model = _tiny_model(example).eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 64)])
    assert out["masks"].shape[1:] == (1, 64, 64)
    assert out["boxes"].shape[0] == out["masks"].shape[0] <= SMALL["box_detections_per_img"]


def test_bad_arguments(example: ModuleType) -> None:
    with pytest.raises(ValueError, match="weights_backbone='IMAGENET1K_V1' needs Swin-T's shape"):
        example.maskrcnn_swin_t_fpn(3, weights_backbone="IMAGENET1K_V1", embed_dim=32)
    with pytest.raises(ValueError, match="depths and num_heads must hold 4 stages"):
        example.maskrcnn_swin_t_fpn(3, depths=(2, 2, 2), num_heads=(1, 2, 4))
    with pytest.raises(TypeError, match="swin must be a torchvision SwinTransformer; got Linear"):
        example.SwinStages(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_main_runs_a_full_width_swin_t_step(example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    example.main(["--steps", "1", "--batch-size", "1", "--image-size", "64", "--device", "cpu"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("step 1: ") and "loss_dcl=" in line
