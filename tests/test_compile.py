"""torch.compile with a changing number of RoIs: the loss alone, and inside a compiled Mask R-CNN.

Every test here compiles, so all are marked ``slow`` (run by default and in CI, left out by
``-m "not slow"``): the inductor runs take 10-20 s a compilation on a CPU; the ``aot_eager`` backend
traces the same graphs (dynamo, symbolic R, the autograd functions' backward) without generating code,
in a few seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing

from densecontrast import DenseContrastiveLoss, FeatureTap, sample_pixels


def rois(r: int, c: int = 16, size: int = 14, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + r)
    feats = torch.randn(r, c, size, size, generator=g)
    masks = torch.zeros(r, size, size, dtype=torch.bool)
    for i in range(r):
        masks[i, 2 + i % 4 : 10 + i % 3, 3:11] = True
    return feats, masks


def _eager_and_compiled(crit, compiled, r: int, *, with_samples: bool):
    feats, masks = rois(r)
    samples = (
        sample_pixels(masks, crit.k, generator=torch.Generator().manual_seed(r)) if with_samples else None
    )
    out = []
    for fn in (crit, compiled):
        f = feats.clone().requires_grad_(True)
        for p in fn.parameters():
            p.grad = None
        torch.manual_seed(r)
        loss = fn(f, masks, samples=samples)
        loss.sum().backward()
        out.append((loss.detach(), f.grad, [p.grad for p in fn.parameters()]))
    return out


def _assert_same(eager, compiled) -> None:
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-4, atol=1e-6)
    for a, b in zip(compiled[2], eager[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    torch.__version__ < (2, 11),
    reason="torch 2.4's Dynamo fails on the dynamic-R graph (internal error); eager works",
)
def test_dynamic_r_compiles_once_fullgraph_aot_eager() -> None:
    torch._dynamo.reset()
    crit = DenseContrastiveLoss(k=8, tau=0.1, in_channels=16)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(copy.deepcopy(crit), backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for r in (4, 7, 40):
        _assert_same(*_eager_and_compiled(crit, compiled, r, with_samples=True))
        frames.append(counter.frame_count)
        assert torch.equal(compiled.last_valid_rois, crit.last_valid_rois)  # set inside the graph too
    assert frames[0] == frames[-1]  # one graph for every R


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_zero_and_one_rois_and_every_reduction_compile(reduction: str) -> None:
    torch._dynamo.reset()
    crit = DenseContrastiveLoss(k=8, tau=0.1, in_channels=16, reduction=reduction)
    compiled = torch.compile(copy.deepcopy(crit), backend="aot_eager", fullgraph=True, dynamic=True)
    for r in (5, 0, 1):  # dynamo specialises sizes 0 and 1: one graph each
        eager, comp = _eager_and_compiled(crit, compiled, r, with_samples=True)
        _assert_same(eager, comp)


@pytest.mark.slow
def test_dynamic_r_inductor_equals_eager_with_sampling() -> None:
    """Inductor on the CPU, fullgraph, sampling in the graph (inductor's RNG set to eager's for the check)."""
    torch._dynamo.reset()
    crit = DenseContrastiveLoss(k=8, tau=0.1, in_channels=16)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(copy.deepcopy(crit), backend=counter, fullgraph=True, dynamic=True)
    previous = torch._inductor.config.fallback_random
    torch._inductor.config.fallback_random = True
    try:
        frames = []
        for r in (4, 7, 12, 64):
            _assert_same(*_eager_and_compiled(crit, compiled, r, with_samples=False))
            frames.append(counter.frame_count)
    finally:
        torch._inductor.config.fallback_random = previous
    assert frames[0] == frames[-1]


@pytest.mark.slow
def test_automatic_dynamic_recompiles_once_then_holds() -> None:
    """Without dynamic=True, torch.compile specialises on the first R and recompiles once, dynamically."""
    torch._dynamo.reset()
    crit = DenseContrastiveLoss(k=8, tau=0.1, in_channels=16)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(copy.deepcopy(crit), backend=counter, fullgraph=True)
    frames = []
    for r in (4, 7, 9, 13, 64):
        _assert_same(*_eager_and_compiled(crit, compiled, r, with_samples=True))
        frames.append(counter.frame_count)
    assert frames[1] > frames[0] and frames[1] == frames[-1]  # one recompilation, then dynamic


@pytest.mark.slow
def test_a_generator_breaks_the_graph_but_still_runs() -> None:
    torch._dynamo.reset()
    crit = DenseContrastiveLoss(k=4, tau=0.1)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(crit, backend=counter, dynamic=True)
    feats, masks = rois(5)
    expected = crit(feats, masks, generator=torch.Generator().manual_seed(0))
    got = compiled(feats, masks, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, expected)


# --- a compiled torchvision Mask R-CNN with attach -------------------------------------------------------


def tiny_mask_rcnn(num_classes: int = 3):
    """A Mask R-CNN with a 2-conv backbone, one feature level and 16-channel heads (builds in ~0.1 s)."""
    tv = pytest.importorskip("torchvision")
    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    backbone.out_channels = 16
    box_pool = tv.ops.MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
    mask_pool = tv.ops.MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2)
    return MaskRCNN(
        backbone,
        rpn_anchor_generator=AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(16 * 7 * 7, 32),
        box_predictor=FastRCNNPredictor(32, num_classes),
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(16, [16, 16], 1),
        mask_predictor=MaskRCNNPredictor(16, 16, num_classes),
        min_size=64,
        max_size=64,
        rpn_pre_nms_top_n_train=50,
        rpn_post_nms_top_n_train=30,
        rpn_batch_size_per_image=32,
        box_batch_size_per_image=32,
    )


def _scene(num_instances: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 64, 64, generator=g)
    boxes, masks = [], []
    for i in range(num_instances):
        x, y = 4 + 12 * (i % 4), 4 + 14 * (i // 4)
        w, h = 16 + i % 3 * 3, 14 + i % 2 * 4
        m = torch.zeros(64, 64, dtype=torch.uint8)
        m[y : y + h, x : x + w] = 1
        masks.append(m)
        boxes.append([x, y, x + w, y + h])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor([1 + i % 2 for i in range(num_instances)]),
        "masks": torch.stack(masks),
    }
    return [image], [target]


@pytest.mark.slow
def test_compiled_mask_rcnn_with_attach_over_steps_with_different_r() -> None:
    """attach, then torch.compile the model: steps with different numbers of positive RoIs give the
    eager model's losses and gradients (aot_eager: the graphs of dynamo and AOT autograd, no codegen)."""
    adapter = pytest.importorskip("densecontrast.adapters.torchvision")
    torch.manual_seed(0)
    eager = tiny_mask_rcnn().train()
    adapter.attach(eager, k=4, tau=0.1)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager", dynamic=True)
    seen_r = set()
    for step, n in enumerate((2, 5, 8)):
        images, targets = _scene(n, seed=step)
        results = []
        for model, fn in ((eager, eager), (compiled_model, compiled)):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(step)
            with FeatureTap.on(model, "roi_heads.mask_roi_pool", what="args") as tap:
                losses = fn(images, targets)
                seen_r.add(sum(len(p) for p in tap.pop()[1]))
            sum(losses.values()).backward()
            results.append((losses, model.dense_contrast.projector.fc1.weight.grad))
        (eager_losses, eager_grad), (compiled_losses, compiled_grad) = results
        assert "loss_dcl" in compiled_losses
        for key, value in eager_losses.items():
            torch.testing.assert_close(compiled_losses[key], value, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-3, atol=1e-5)
    assert len(seen_r) >= 2  # the steps really had different numbers of positive RoIs
