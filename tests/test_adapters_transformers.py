"""Tests of densecontrast.adapters.transformers on real (randomly initialised) Hugging Face models.

Mask2Former and MaskFormer are built from configs with a tiny Swin backbone (embed_dim 16, one block
per stage) and 32-channel heads on 32 x 48 images: no download, a fraction of a second per warm step.
"""

from __future__ import annotations

import copy
import os
import weakref
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy")  # Hungarian matching in the models' own losses
pytest.importorskip("torchvision")

from _helpers import RecordingCriterion, is_released  # noqa: E402

from densecontrast import DenseContrastiveLoss  # noqa: E402
from densecontrast.adapters.rois import gt_box_rois  # noqa: E402
from densecontrast.adapters.transformers import (  # noqa: E402
    DEFAULT_LAYER,
    LOSS_KEY,
    DenseContrastHandle,
    attach,
    get_handle,
    instance_masks,
)

H, W = 32, 48
NUM_LABELS = 3
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _swin() -> object:
    return transformers.SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
        window_size=4, drop_path_rate=0.0, out_features=STAGES,
    )  # fmt: skip


def tiny_mask2former() -> nn.Module:
    config = transformers.Mask2FormerConfig(
        backbone_config=_swin(), num_labels=NUM_LABELS, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        dim_feedforward=64, num_queries=8, train_num_points=256,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.Mask2FormerForUniversalSegmentation(config)


def tiny_maskformer() -> nn.Module:
    detr = transformers.DetrConfig(
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=8,
    )  # fmt: skip
    config = transformers.MaskFormerConfig(
        backbone_config=_swin(), decoder_config=detr, num_labels=NUM_LABELS, fpn_feature_size=32,
        mask_feature_size=32,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.MaskFormerForInstanceSegmentation(config)


def _batch() -> dict[str, object]:
    """Two images: three segments (classes 0, 1, 2) and one segment (class 2)."""
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, H, W, generator=g)
    first = torch.zeros(3, H, W)
    first[0, 3:15, 3:20] = 1
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    first[1] = (((yy - 22) / 7) ** 2 + ((xx - 32) / 12) ** 2 <= 1).float()
    first[2, 20:30, 4:15] = 1
    second = torch.zeros(1, H, W)
    second[0, 5:25, 10:35] = 1
    return {
        "pixel_values": pixels,
        "mask_labels": [first, second],
        "class_labels": [torch.tensor([0, 1, 2]), torch.tensor([2])],
    }


def _loss_dict(model: nn.Module, batch: dict[str, object], seed: int = 5) -> tuple[object, dict[str, Tensor]]:
    """Run a forward and return the outputs and the criterion's (weighted) loss dict."""
    seen: dict[str, dict[str, Tensor]] = {}
    hook = model.criterion.register_forward_hook(
        lambda module, args, kwargs, out: seen.update(losses=out), with_kwargs=True
    )
    try:
        torch.manual_seed(seed)  # the models' losses sample points at random
        outputs = model(**batch)
    finally:
        hook.remove()
    return outputs, seen.get("losses", {})


@pytest.fixture(scope="module")
def m2f() -> nn.Module:
    return tiny_mask2former()


# --------------------------------------------------------------------------------- the loss is added


@pytest.mark.parametrize("build", [tiny_mask2former, tiny_maskformer], ids=["mask2former", "maskformer"])
def test_loss_dcl_is_added_to_the_loss_dict_and_to_outputs_loss(build) -> None:
    model = build().train()
    batch = _batch()
    plain, plain_losses = _loss_dict(model, batch)
    handle = attach(model, weight=0.5, margin=0.1)
    outputs, losses = _loss_dict(model, batch)
    assert set(losses) == set(plain_losses) | {LOSS_KEY}
    dcl = losses[LOSS_KEY]
    assert dcl.ndim == 0 and torch.isfinite(dcl) and dcl > 0
    assert handle.last_num_rois == 4 and torch.equal(handle.last_loss, dcl.detach())
    # The model's own terms are unchanged (same seed) and the term is summed once, unweighted by the model.
    for key, value in plain_losses.items():
        torch.testing.assert_close(losses[key], value, rtol=0, atol=0)
    torch.testing.assert_close(outputs.loss, plain.loss + dcl, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(outputs.loss, sum(losses.values()), rtol=1e-6, atol=1e-5)
    handle.remove()


def test_weight_scales_the_term(m2f: nn.Module) -> None:
    m2f.train()
    values = []
    for weight in (1.0, 2.5):
        with attach(m2f, weight=weight, criterion=DenseContrastiveLoss(k=8, tau=0.1)):
            torch.manual_seed(0)
            values.append(_loss_dict(m2f, _batch())[1][LOSS_KEY])
    torch.testing.assert_close(values[1], 2.5 * values[0])


def test_rois_and_masks_are_built_from_the_labels(m2f: nn.Module) -> None:
    """The criterion receives gt_box_rois of the mask projection's output and the labels."""
    m2f.train()
    batch = _batch()
    recorder = RecordingCriterion()
    feature_map: dict[str, Tensor] = {}
    tap = m2f.model.pixel_level_module.decoder.mask_projection.register_forward_hook(
        lambda module, args, out: feature_map.update(out=out)
    )
    with attach(m2f, criterion=recorder, margin=0.2, output_size=14):
        _loss_dict(m2f, batch)
    tap.remove()
    [(feats, masks)] = recorder.seen
    assert feature_map["out"].shape == (2, 32, H // 4, W // 4)
    expected = gt_box_rois(feature_map["out"], batch["mask_labels"], output_size=14, margin=0.2)
    torch.testing.assert_close(feats, expected.feats, rtol=0, atol=0)
    assert torch.equal(masks, expected.masks)
    assert masks.shape == (4, 14, 14)


def test_gradients_reach_the_pixel_decoder_and_the_projector(m2f: nn.Module) -> None:
    m2f.train()
    m2f.zero_grad(set_to_none=True)
    with attach(m2f):
        _, losses = _loss_dict(m2f, _batch())
        losses[LOSS_KEY].backward()  # the dense contrastive term alone
        decoder = m2f.model.pixel_level_module.decoder
        for name, module in [
            ("mask_projection", decoder.mask_projection),
            ("input_projections", decoder.input_projections),
            ("encoder", decoder.encoder),
            ("backbone stem", m2f.model.pixel_level_module.encoder.swin.embeddings),
            ("projector", m2f.dense_contrast),
        ]:
            grads = [p.grad for p in module.parameters()]
            assert grads and all(g is not None for g in grads), name
            assert sum(float(g.abs().sum()) for g in grads) > 0, name
        # the queries' side is not touched by the term
        assert all(p.grad is None for p in m2f.class_predictor.parameters())


def test_images_without_instances_give_a_zero_in_the_graph(m2f: nn.Module) -> None:
    m2f.train()
    m2f.zero_grad(set_to_none=True)
    # class 1 is the only "instance" class here, and no segment has it
    batch = _batch()
    batch["class_labels"] = [torch.tensor([0, 2, 2]), torch.tensor([0])]
    with attach(m2f, instance_classes={1}) as handle:
        outputs, losses = _loss_dict(m2f, batch)
        dcl = losses[LOSS_KEY]
        assert handle.last_num_rois == 0
        assert dcl.item() == 0.0 and dcl.requires_grad
        outputs.loss.backward()
        for p in m2f.dense_contrast.parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) == 0
        assert m2f.model.pixel_level_module.decoder.mask_projection.weight.grad is not None


def test_instance_classes_select_the_segments(m2f: nn.Module) -> None:
    m2f.train()
    with attach(m2f, instance_classes=[2]) as handle:
        _loss_dict(m2f, _batch())
        assert handle.last_num_rois == 2  # one segment of class 2 in each image


# --------------------------------------------------------------------------- eval and removal


def test_eval_outputs_are_bit_identical_with_and_without(m2f: nn.Module) -> None:
    m2f.eval()
    batch = _batch()
    with torch.no_grad():
        plain, _ = _loss_dict(m2f, batch)
        handle = attach(m2f)
        attached, losses = _loss_dict(m2f, batch)
        handle.remove()
        removed, _ = _loss_dict(m2f, batch)
    assert LOSS_KEY not in losses  # labels given in eval: the model's loss only (Trainer's eval loss)
    for out in (attached, removed):
        for name in ("class_queries_logits", "masks_queries_logits", "loss"):
            assert torch.equal(getattr(out, name), getattr(plain, name)), name


def test_remove_restores_the_model(m2f: nn.Module) -> None:
    m2f.train()

    def hooks() -> tuple[dict, ...]:
        return dict(m2f._forward_hooks), dict(m2f._forward_pre_hooks), dict(m2f.criterion._forward_hooks)

    hooks_before = hooks()
    keys_before = set(m2f.state_dict())
    handle = attach(m2f)
    assert get_handle(m2f) is handle and isinstance(handle, DenseContrastHandle)
    assert {k for k in m2f.state_dict() if k not in keys_before} and "attached" in repr(handle)
    handle.remove()
    handle.remove()  # idempotent
    assert get_handle(m2f) is None and not hasattr(m2f, "dense_contrast")
    assert set(m2f.state_dict()) == keys_before
    assert hooks() == hooks_before
    _, losses = _loss_dict(m2f, _batch())
    assert LOSS_KEY not in losses


def test_a_forward_without_labels_keeps_nothing(m2f: nn.Module) -> None:
    m2f.train()
    with attach(m2f) as handle:
        m2f(pixel_values=_batch()["pixel_values"])
        assert handle.pending_steps == 0


def test_a_training_call_of_the_inner_model_keeps_nothing(m2f: nn.Module) -> None:
    m2f.train()
    refs: list[weakref.ref[Tensor]] = []
    layer = m2f.model.pixel_level_module.decoder.mask_projection
    with attach(m2f) as handle:
        tap = layer.register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
        out = m2f.model(pixel_values=_batch()["pixel_values"])
        tap.remove()
        del out
        assert len(refs) == 1 and is_released(refs[0]), "the inner call's mask features are still referenced"
        assert handle.pending_steps == 0


def test_an_exception_in_the_criterion_releases_the_feature_map(m2f: nn.Module) -> None:
    """When the step raises after the mask projection (an OOM, a bad target), the handle must not keep
    the feature map, and with it the step's graph, alive."""
    m2f.train()
    refs: list[weakref.ref[Tensor]] = []
    layer = m2f.model.pixel_level_module.decoder.mask_projection
    with attach(m2f) as handle:
        tap = layer.register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))

        def explode(module: nn.Module, args: Any, kwargs: Any) -> None:
            raise RuntimeError("out of memory (simulated)")

        boom = m2f.criterion.register_forward_pre_hook(explode, with_kwargs=True)
        try:
            with pytest.raises(RuntimeError, match="simulated") as raised:
                m2f(**_batch())
            del raised  # its traceback holds the step's frames
        finally:
            boom.remove()
            tap.remove()
        assert len(refs) == 1, "the mask projection did not run: the test would prove nothing"
        assert is_released(refs[0]), "the interrupted step's feature map is still referenced"
        assert handle.pending_steps == 0
        _, losses = _loss_dict(m2f, _batch())  # the next step runs normally
        assert torch.isfinite(losses[LOSS_KEY])


def test_deepcopy_carries_its_own_handle(m2f: nn.Module) -> None:
    m2f.train()
    with attach(m2f) as handle:
        clone = copy.deepcopy(m2f)
        assert get_handle(clone) is not handle and get_handle(clone).model is clone
        _, losses = _loss_dict(clone, _batch())
        assert torch.isfinite(losses[LOSS_KEY])
        get_handle(clone).remove()


# ------------------------------------------------------------------------------- labels and padding


def test_instance_masks_value_one_is_instance_the_ignore_value_is_ignored() -> None:
    labels = torch.tensor([[[0.0, 1.0, 255.0, 1.0]], [[1.0, 0.0, 255.0, 0.0]]])
    pixel_mask = torch.tensor([[[1, 1, 1, 0]]])
    (masks,) = instance_masks([labels], [torch.tensor([4, 0])])
    assert masks.dtype == torch.int8 and masks.tolist() == [[[0, 1, -1, 1]], [[1, 0, -1, 0]]]
    (masks,) = instance_masks([labels], [torch.tensor([4, 0])], instance_classes={4}, pixel_mask=pixel_mask)
    assert masks.tolist() == [[[0, 1, -1, -1]]]
    (empty,) = instance_masks([torch.zeros(0, 2, 3)], [torch.zeros(0, dtype=torch.int64)])
    assert empty.shape == (0, 2, 3)


def test_processor_padding_is_never_foreground() -> None:
    """Labels padded by Mask2FormerImageProcessor with ignore_index=255 become -1 where padded."""
    import numpy as np

    processor = transformers.Mask2FormerImageProcessor(do_resize=False, ignore_index=255)
    images = [np.zeros((40, 48, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
    maps = [np.zeros((40, 48), np.uint8), np.zeros((32, 64), np.uint8)]
    maps[0][5:20, 5:20], maps[0][20:35, 25:45], maps[1][4:30, 10:50] = 1, 2, 1
    enc = processor(
        images=images, segmentation_maps=maps, instance_id_to_semantic_id=[{0: 0, 1: 3, 2: 4}, {0: 0, 1: 5}],
        return_tensors="pt",
    )  # fmt: skip
    assert all(255 in torch.unique(m) for m in enc["mask_labels"])  # what the processor does
    masks = instance_masks(enc["mask_labels"], enc["class_labels"], instance_classes={3, 4, 5})
    assert [m.shape[0] for m in masks] == [2, 1]  # the background segments (class 0) are left out
    for m, (h, w) in zip(masks, [(40, 48), (32, 64)]):
        assert (m[:, h:, :] == -1).all() and (m[:, :, w:] == -1).all()
        assert (m[:, :h, :w] >= 0).all()
    assert int((masks[0][0] == 1).sum()) == 15 * 15 and int((masks[1][0] == 1).sum()) == 26 * 40


def _padded_scene() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Features and labels of a 64 x 96 image, and the same padded to 84 x 128 (features: the first
    padded row and column replicate the edge, as RoIAlign's edge clamp reads it; the rest is noise).
    Segment 1 touches the image's right and bottom edges, so an enlarged box reaches into the padding."""
    g = torch.Generator().manual_seed(3)
    h, w = 64, 96
    feats = torch.randn(1, 16, h // 4, w // 4, generator=g, dtype=torch.float64)
    labels = torch.zeros(2, h, w, dtype=torch.float64)
    labels[0, 6:30, 10:40] = 1
    labels[1, 30:64, 52:96] = 1
    padded_feats = torch.randn(1, 16, h // 4 + 5, w // 4 + 8, generator=g, dtype=torch.float64)
    padded_feats[..., : h // 4 + 1, : w // 4 + 1] = F.pad(feats, (0, 1, 0, 1), mode="replicate")
    return feats, labels, padded_feats, torch.zeros(2, h + 20, w + 32, dtype=torch.float64)


def test_a_padded_batch_gives_the_unpadded_loss() -> None:
    """Same samples, same features on the image: 255 padding (or pixel_mask) changes nothing, while
    0 padding without pixel_mask would turn the padding into negatives and change the loss."""
    feats, labels, padded_feats, canvas = _padded_scene()
    classes = torch.tensor([1, 2])
    crit = DenseContrastiveLoss(k=16, tau=0.1, in_channels=16).double()

    def loss(f: Tensor, m: Tensor, pixel_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        rois = gt_box_rois(f, instance_masks([m], [classes], pixel_mask=pixel_mask), margin=0.3)
        torch.manual_seed(11)
        return crit(rois.feats, rois.masks).detach(), rois.masks

    h, w = labels.shape[-2:]
    padded_255, padded_0 = canvas + 255.0, canvas.clone()
    padded_255[:, :h, :w] = labels
    padded_0[:, :h, :w] = labels
    pixel_mask = torch.zeros(1, *canvas.shape[-2:], dtype=torch.int64)
    pixel_mask[:, :h, :w] = 1

    expected, expected_masks = loss(feats, labels)
    assert expected > 0 and (expected_masks == -1).any()  # the enlarged box reaches past the image
    for got, got_masks in (loss(padded_feats, padded_255), loss(padded_feats, padded_0, pixel_mask)):
        assert torch.equal(got_masks, expected_masks)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # The control: 0-padded labels without pixel_mask make the padding negatives.
    unmasked, unmasked_masks = loss(padded_feats, padded_0)
    assert not (unmasked_masks == -1).any()
    assert abs(float(unmasked) - float(expected)) > 1e-3


def test_label_padding_is_ignored_through_attach(m2f: nn.Module) -> None:
    """In the model: the last 12 columns are padding (label 255, or 0 with a pixel_mask); segments that
    touch the image's right edge get -1 there, as labels marked -1 (ignore) on the padding do."""
    m2f.train()
    batch = _batch()
    recorder = RecordingCriterion()
    image_w = W - 12
    labels = [m[:, :, :image_w].clone() for m in batch["mask_labels"]]
    labels[1][0, 10:H, 20:image_w] = 1  # against the right and bottom edges of the image
    ignored = [F.pad(m, (0, 12), value=-1.0) for m in labels]
    expected = gt_box_rois(torch.zeros(2, 1, H // 4, W // 4), ignored, margin=0.3).masks
    assert (expected == -1).any()
    padded_255 = [F.pad(m, (0, 12), value=255.0) for m in labels]
    padded_0 = [F.pad(m, (0, 12), value=0.0) for m in labels]
    pixel_mask = torch.ones(2, H, W, dtype=torch.int64)
    pixel_mask[:, :, image_w:] = 0
    with attach(m2f, criterion=recorder, margin=0.3):
        _loss_dict(m2f, {**batch, "mask_labels": padded_255})
        _loss_dict(m2f, {**batch, "mask_labels": padded_0, "pixel_mask": pixel_mask})
        _loss_dict(m2f, {**batch, "mask_labels": padded_0})  # the control
    received = [masks for _, masks in recorder.seen]
    assert len(received) == 3
    assert torch.equal(received[0], expected) and torch.equal(received[1], expected)
    # The control: without pixel_mask, 0-padded labels turn the padding into negatives (0 for -1).
    assert ((received[2] == 0) & (expected == -1)).any()
    assert not ((received[2] == -1) & (expected != -1)).any()


def test_pixel_mask_is_applied_in_the_model(m2f: nn.Module) -> None:
    """With 0-padded labels (ignore_index=None), the model's pixel_mask still keeps padding out."""
    m2f.train()
    batch = _batch()
    recorder = RecordingCriterion()
    pixel_mask = torch.ones(2, H, W, dtype=torch.int64)
    pixel_mask[:, :, 18:] = 0  # the right part counts as padding
    with attach(m2f, criterion=recorder, margin=0.5, instance_classes={0}):
        _loss_dict(m2f, {**batch, "pixel_mask": pixel_mask})
    [(_, masks)] = recorder.seen
    first = batch["mask_labels"][0][:1]
    padded = first.masked_fill(pixel_mask[0] == 0, 255.0)
    expected = gt_box_rois(
        torch.zeros(1, 1, H // 4, W // 4), [padded.masked_fill(padded == 255, -1)], margin=0.5
    )
    assert torch.equal(masks, expected.masks)
    assert (masks == -1).any()


# ------------------------------------------------------------------------------------- bad inputs


def test_bad_arguments(m2f: nn.Module) -> None:
    with pytest.raises(TypeError, match="model must be a Hugging Face Mask2Former"):
        attach(object())
    with pytest.raises(ValueError, match="has no criterion module"):
        attach(m2f.model)
    with pytest.raises(ValueError, match="weight must be a finite non-negative number"):
        attach(m2f, weight=-1.0)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        attach(m2f, margin=-0.1)
    with pytest.raises(TypeError, match="instance_classes must hold int class ids"):
        attach(m2f, instance_classes=["person"])
    with pytest.raises(TypeError, match="instance_classes must be None or a collection"):
        attach(m2f, instance_classes=3)
    with pytest.raises(ValueError, match="output_size must be a positive int"):
        attach(m2f, output_size=0)
    with pytest.raises(ValueError, match="k and tau configure the default criterion"):
        attach(m2f, criterion=DenseContrastiveLoss(), k=8)
    with pytest.raises(ValueError, match="no submodule named"):
        attach(m2f, layer="model.pixel_level_module.decoder.mask_projektion")
    with attach(m2f), pytest.raises(ValueError, match="already has a 'dense_contrast' submodule"):
        attach(m2f)
    assert not hasattr(m2f, "dense_contrast")
    weights = dict(m2f.weight_dict)
    m2f.weight_dict["dcl"] = 3.0
    try:
        with pytest.raises(
            ValueError, match=r"weight_dict to be contained in 'loss_dcl'; got \['dcl'.*rename the key"
        ):
            attach(m2f)
    finally:
        m2f.weight_dict.clear()
        m2f.weight_dict.update(weights)
    assert DEFAULT_LAYER == "model.pixel_level_module.decoder.mask_projection"


def test_bad_labels() -> None:
    with pytest.raises(TypeError, match="mask_labels must be a list of B tensors"):
        instance_masks(torch.zeros(1, 2, 3, 3), [torch.tensor([1, 2])])
    with pytest.raises(ValueError, match="must hold one tensor per image; got 1 and 2"):
        instance_masks([torch.zeros(2, 3, 3)], [torch.tensor([1, 2]), torch.tensor([1])])
    with pytest.raises(ValueError, match=r"class_labels\[0\] shape \(G,\); got \(2, 3, 3\) and \(3,\)"):
        instance_masks([torch.zeros(2, 3, 3)], [torch.tensor([1, 2, 3])])


def test_trainer_trains_on_the_term(m2f: nn.Module, tmp_path) -> None:
    """transformers.Trainer's loss is outputs.loss, so it includes the term with no custom step."""
    pytest.importorskip("accelerate")  # Trainer needs it
    args = transformers.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = transformers.Trainer(model=m2f, args=args)
    m2f.train()
    batch = _batch()
    torch.manual_seed(5)
    plain = trainer.compute_loss(m2f, dict(batch))
    with attach(m2f, weight=2.0) as handle:
        torch.manual_seed(5)
        loss = trainer.compute_loss(m2f, dict(batch))
        assert handle.last_loss is not None and handle.last_loss > 0
        torch.testing.assert_close(loss, plain + handle.last_loss, rtol=1e-6, atol=1e-5)


def test_labels_for_more_images_than_the_features_say_what_to_pass(m2f: nn.Module) -> None:
    m2f.train()

    def one_image_more(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
        masks, classes = kwargs["mask_labels"], kwargs["class_labels"]
        return args, {**kwargs, "mask_labels": [*masks, masks[0]], "class_labels": [*classes, classes[0]]}

    with attach(m2f) as handle:
        cut = m2f.criterion.register_forward_pre_hook(one_image_more, with_kwargs=True)
        try:
            with pytest.raises(
                RuntimeError,
                match=r"expected mask_labels to hold one tensor per image, 2 as in the mask features "
                r"\(2, 32, 8, 12\); got 3\. Pass mask_labels and class_labels as lists",
            ):
                m2f(**_batch())
        finally:
            cut.remove()
        assert handle.pending_steps == 0


def test_a_model_in_float64_gets_a_float64_criterion(m2f: nn.Module) -> None:
    # Mask2Former's own loss (its Hungarian matcher) runs in float32 only (transformers 5.24): a float64,
    # bf16 or fp16 model fails there, before the adapter's term; the adapter's criterion still follows
    # the model, and the documented way to train in lower precision is autocast.
    model = copy.deepcopy(m2f).double()
    with attach(model):
        assert {p.dtype for p in model.dense_contrast.parameters()} == {torch.float64}


def test_autocast_bf16_cpu_trains_on_the_term(m2f: nn.Module) -> None:
    m2f.train()
    with attach(m2f) as handle:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = m2f(**_batch())
        assert torch.isfinite(outputs.loss) and handle.last_loss is not None and handle.last_loss > 0
        outputs.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in m2f.dense_contrast.parameters())
