"""Tests of densecontrast.adapters.rois.gt_box_rois against a float64 loop written plainly."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import Tensor

pytest.importorskip("torchvision")

from densecontrast import DenseContrastiveLoss
from densecontrast.adapters.rois import GtBoxRoIs, gt_box_rois, infer_stride

# ---------------------------------------------------------------- the reference, one instance at a time


def _bilinear(img: Tensor, y: float, x: float) -> Tensor:
    """RoIAlign's bilinear read of img (C, H, W) at (y, x): zero beyond one pixel outside, edge-clamped."""
    _, h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return img.new_zeros(img.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * img[:, y0, x0]
        + hy * lx * img[:, y0, x1]
        + ly * hx * img[:, y1, x0]
        + ly * lx * img[:, y1, x1]
    )


def _crop(img: Tensor, box: list[float], size: tuple[int, int]) -> Tensor:
    """Aligned RoIAlign of one box (in img's pixel frame) with the adaptive sampling grid."""
    h, w = size
    x1, y1, x2, y2 = (v - 0.5 for v in box)
    bin_h, bin_w = (y2 - y1) / h, (x2 - x1) / w
    gh, gw = math.ceil((y2 - y1) / h), math.ceil((x2 - x1) / w)
    out = img.new_zeros(img.shape[0], h, w)
    for ph in range(h):
        for pw in range(w):
            acc = img.new_zeros(img.shape[0])
            for iy in range(gh):
                for ix in range(gw):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / gh
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / gw
                    acc = acc + _bilinear(img, y, x)
            out[:, ph, pw] = acc / max(gh * gw, 1)
    return out


def _reference(
    feats: Tensor,
    masks: list[Tensor],
    stride: tuple[float, float],
    size: tuple[int, int],
    margin: float,
    boxes: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, int]]]:
    out_feats, out_masks, out_boxes, where = [], [], [], []
    sy, sx = stride
    for b, image_masks in enumerate(masks):
        for j, m in enumerate(image_masks):
            ys, xs = torch.nonzero(m == 1, as_tuple=True)
            if len(ys) == 0:
                continue
            if boxes is None:
                box = [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]
            else:
                box = [float(v) for v in boxes[b][j]]
            bw, bh = box[2] - box[0], box[3] - box[1]
            box = [box[0] - margin * bw, box[1] - margin * bh, box[2] + margin * bw, box[3] + margin * bh]
            out_boxes.append(box)
            where.append((b, j))
            fbox = [box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy]
            out_feats.append(_crop(feats[b].double(), fbox, size))
            inst = _crop((m == 1).double()[None], box, size)[0]
            ignored = _crop((m == -1).double()[None], box, size)[0]
            inside = _crop(torch.ones_like(m, dtype=torch.float64)[None], box, size)[0]
            roi_mask = (inst >= 0.5).to(torch.int8)
            roi_mask[(ignored >= 0.5) | (inside < 0.5)] = -1
            out_masks.append(roi_mask)
    return torch.stack(out_feats), torch.stack(out_masks), torch.tensor(out_boxes, dtype=torch.float64), where


def _scene(seed: int, shape: tuple[int, int] = (48, 64)) -> list[Tensor]:
    """Two images of instances: ellipses, a box-shaped one at the border, an empty one, ignore pixels."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    images = []
    for count in (3, 2):
        ms = []
        for _ in range(count):
            cy, cx = float(torch.rand(1, generator=g)) * h, float(torch.rand(1, generator=g)) * w
            ry, rx = 4 + float(torch.rand(1, generator=g)) * 10, 4 + float(torch.rand(1, generator=g)) * 12
            ms.append((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).to(torch.int8))
        images.append(torch.stack(ms))
    images[0][1, :, :] = 0
    images[0][1, 0:10, 50:64] = 1  # a box-shaped instance at the border
    ys = torch.nonzero(images[0][2])[:, 0]
    mid = int(ys.min() + ys.max()) // 2
    rows = images[0][2, mid - 1 : mid + 2]
    images[0][2, mid - 1 : mid + 2] = torch.where(rows == 1, -1, 0).to(torch.int8)  # ignore pixels
    images[1] = torch.cat([images[1], torch.zeros(1, h, w, dtype=torch.int8)])  # an empty instance
    return images


@pytest.mark.parametrize(
    ("stride", "margin", "size"), [(4, 0.0, (7, 7)), (8, 0.25, (6, 5)), (2, 0.1, (4, 9))]
)
def test_equals_a_float64_loop_over_instances(stride: int, margin: float, size: tuple[int, int]) -> None:
    masks = _scene(stride)
    h, w = masks[0].shape[-2:]
    feats = torch.randn(2, 3, h // stride, w // stride, dtype=torch.float64)
    rois = gt_box_rois(feats, masks, output_size=size, margin=margin)
    ref_feats, ref_masks, ref_boxes, where = _reference(feats, masks, (stride, stride), size, margin)
    assert isinstance(rois, GtBoxRoIs)
    assert [(int(b), int(j)) for b, j in zip(rois.batch_idx, rois.instance_idx)] == where
    assert (1, 2) not in where and len(where) == 5  # the empty instance is dropped
    torch.testing.assert_close(rois.boxes, ref_boxes, rtol=0, atol=1e-12)
    torch.testing.assert_close(rois.feats, ref_feats, rtol=0, atol=1e-12)
    assert rois.masks.dtype == torch.int8 and torch.equal(rois.masks, ref_masks)
    assert (rois.masks == -1).any() and (rois.masks == 0).any() and (rois.masks == 1).any()


def test_given_boxes_equal_the_loop_and_an_anisotropic_stride() -> None:
    masks = _scene(5)
    h, w = masks[0].shape[-2:]
    boxes = []
    for m in masks:
        g = torch.Generator().manual_seed(int(m.shape[0]))
        xy = torch.rand(m.shape[0], 2, generator=g, dtype=torch.float64) * torch.tensor([w - 20, h - 20.0])
        boxes.append(torch.cat([xy, xy + 6 + 13.5 * torch.rand(m.shape[0], 2, generator=g)], 1))
    feats = torch.randn(2, 4, h // 4, w // 8, dtype=torch.float64)  # stride 4 down, 8 across
    rois = gt_box_rois(feats, masks, boxes, output_size=(5, 6), margin=0.2)
    ref_feats, ref_masks, ref_boxes, where = _reference(feats, masks, (4, 8), (5, 6), 0.2, boxes)
    assert [(int(b), int(j)) for b, j in zip(rois.batch_idx, rois.instance_idx)] == where
    torch.testing.assert_close(rois.boxes, ref_boxes, rtol=0, atol=1e-12)
    torch.testing.assert_close(rois.feats, ref_feats, rtol=0, atol=1e-12)
    assert torch.equal(rois.masks, ref_masks)


# ---------------------------------------------------------------- geometry: features follow the masks


def _coordinate_map(height: int, width: int, stride: int) -> Tensor:
    """(1, 2, H/s, W/s): each cell holds its centre's image coordinates (x, y)."""
    ys = (torch.arange(height // stride, dtype=torch.float64) + 0.5) * stride
    xs = (torch.arange(width // stride, dtype=torch.float64) + 0.5) * stride
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"))[None]


@pytest.mark.parametrize("stride", [4, 8])
def test_roi_features_sit_at_their_bins_image_coordinates(stride: int) -> None:
    """A map holding each cell's image coordinates is linear, so RoIAlign at the right stride and
    alignment returns exactly the image coordinates of each bin's centre."""
    height, width = 64, 96
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, 17:45, 30:77] = True
    rois = gt_box_rois(_coordinate_map(height, width, stride), [mask], output_size=(7, 5))
    x1, y1, x2, y2 = 30.0, 17.0, 77.0, 45.0
    cx = x1 + (torch.arange(5, dtype=torch.float64) + 0.5) * (x2 - x1) / 5
    cy = y1 + (torch.arange(7, dtype=torch.float64) + 0.5) * (y2 - y1) / 7
    torch.testing.assert_close(rois.feats[0, 0], cx.expand(7, 5), rtol=0, atol=1e-9)
    torch.testing.assert_close(rois.feats[0, 1], cy[:, None].expand(7, 5), rtol=0, atol=1e-9)


@pytest.mark.parametrize("stride", [4, 8])
def test_a_moving_blob_and_its_mask_move_together(stride: int) -> None:
    """A bright blob in the feature map and its instance mask in the image: wherever the blob goes, the
    RoI's bright features land on the RoI's instance pixels, and never on the rest of the box."""
    height, width = 64, 96
    for fy, fx in [(1, 1), (2, 6), (4, 3), (3, 8)]:
        feats = torch.zeros(1, 1, height // stride, width // stride, dtype=torch.float64)
        a, b = 3 if stride == 4 else 2, 4 if stride == 4 else 3
        feats[0, 0, fy : fy + a, fx : fx + b] = 1.0
        mask = torch.zeros(1, height, width, dtype=torch.int8)
        mask[0, fy * stride : (fy + a) * stride, fx * stride : (fx + b) * stride] = 1
        # Bins on the blob's edge read 0.5 in the mask (a tie): the band marks them ignored.
        rois = gt_box_rois(feats, [mask], output_size=14, margin=0.5, ignore_band=0.05)
        roi, inst, off = rois.feats[0, 0], rois.masks[0] == 1, rois.masks[0] == 0
        assert inst.sum() > 20 and off.sum() > 20
        assert not ((roi > 0.5) & off).any(), "a bright feature on a negative pixel"
        assert not ((roi < 0.5) & inst).any(), "a dark feature on an instance pixel"
        assert ((roi > 0.5) & inst).sum() == inst.sum()


# ---------------------------------------------------------------- padding, empties, the loss


def test_padding_and_outside_the_frame_are_ignored() -> None:
    full = torch.zeros(1, 40, 40, dtype=torch.bool)
    full[0, 20:36, 24:40] = True
    small = torch.zeros(1, 24, 32, dtype=torch.bool)  # an image padded to 40 x 40
    small[0, 10:24, 16:32] = True
    feats = torch.randn(2, 2, 10, 10)
    with pytest.raises(ValueError, match=r"different sizes.*image_size"):
        gt_box_rois(feats, [full, small])
    rois = gt_box_rois(feats, [full, small], output_size=8, margin=0.5, image_size=(40, 40))
    for r in range(2):
        # the enlarged box reaches past the right and bottom edge of each image: those bins are ignored
        assert (rois.masks[r, -1] == -1).all() and (rois.masks[r, :, -1] == -1).all()
        assert (rois.masks[r, 0, :3] == 0).all()
    assert (rois.masks[1] == 1).sum() == (rois.masks[0] == 1).sum()


def test_no_instances_gives_empty_rois_and_a_zero_loss_in_the_graph() -> None:
    feats = torch.randn(2, 8, 8, 8, requires_grad=True)
    masks = [torch.zeros(2, 32, 32, dtype=torch.bool), torch.zeros(0, 32, 32, dtype=torch.bool)]
    rois = gt_box_rois(feats, masks, output_size=6)
    assert rois.feats.shape == (0, 8, 6, 6) and rois.masks.shape == (0, 6, 6)
    assert rois.boxes.shape == (0, 4) and rois.batch_idx.shape == rois.instance_idx.shape == (0,)
    crit = DenseContrastiveLoss(k=4, in_channels=8)
    loss = crit(rois.feats, rois.masks)
    loss.backward()
    assert loss.item() == 0.0 and feats.grad is not None and torch.count_nonzero(feats.grad) == 0
    assert all(p.grad is not None for p in crit.parameters())


def test_the_loss_reaches_the_feature_map() -> None:
    masks = _scene(1)
    feats = torch.randn(2, 8, 12, 16, requires_grad=True)
    rois = gt_box_rois(feats, masks, output_size=14, margin=0.2)
    loss = DenseContrastiveLoss(k=8, in_channels=8)(rois.feats, rois.masks)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and feats.grad.abs().sum() > 0


def test_half_precision_maps_are_sampled_in_float32() -> None:
    masks = _scene(2)
    feats = torch.randn(2, 3, 12, 16)
    rois32 = gt_box_rois(feats, masks, output_size=7)
    rois16 = gt_box_rois(feats.to(torch.bfloat16), masks, output_size=7)
    assert rois16.feats.dtype == torch.bfloat16 and rois16.boxes.dtype == torch.float32
    torch.testing.assert_close(rois16.feats.float(), rois32.feats, rtol=0.02, atol=0.02)
    assert torch.equal(rois16.masks, rois32.masks)


def test_infer_stride() -> None:
    assert infer_stride(640, 160) == 4.0 and infer_stride(100, 13) == 8.0 and infer_stride(100, 25) == 4.0
    assert infer_stride(80, 160) == 0.5 and infer_stride(90, 20) == 4.5
    # Several integers fit these coarse maps; the power of two is the network's stride.
    assert infer_stride(200, 13) == 16.0 and infer_stride(656, 21) == 32.0 and infer_stride(52, 7) == 8.0
    with pytest.raises(ValueError, match="positive"):
        infer_stride(0, 4)
    with pytest.raises(TypeError, match="must be ints"):
        infer_stride(64.0, 4)  # type: ignore[arg-type]


@pytest.mark.parametrize("stride", [4, 8, 16, 32])
def test_infer_stride_reads_ceil_and_floor_sized_maps(stride: int) -> None:
    # Maps of one or two cells are ambiguous between neighbouring powers of two (see the docstring).
    for image in range(3 * stride, 70 * stride):
        for feature in {math.ceil(image / stride), image // stride}:
            if feature >= 3:
                assert infer_stride(image, feature) == stride, (image, feature)


def test_stride_given_overrides_the_inferred_one() -> None:
    masks = _scene(5)  # 48 x 64
    feats = torch.randn(2, 4, 12, 16, dtype=torch.float64)
    inferred = gt_box_rois(feats, masks, output_size=7, margin=0.1)
    given = gt_box_rois(feats, masks, output_size=7, margin=0.1, stride=4)
    assert torch.equal(given.feats, inferred.feats) and torch.equal(given.masks, inferred.masks)
    # A map of 12 x 16 cells over the top-left 24 x 32 pixels: stride 2, against the inferred 4.
    half = gt_box_rois(feats, masks, output_size=7, margin=0.1, stride=(2.0, 2))
    ref_feats, ref_masks, _, _ = _reference(feats, masks, (2.0, 2.0), (7, 7), 0.1)
    torch.testing.assert_close(half.feats, ref_feats, rtol=0, atol=1e-12)
    assert torch.equal(half.masks, ref_masks)
    assert not torch.allclose(half.feats, inferred.feats)


def test_masks_larger_than_image_size_are_refused() -> None:
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 40:60, 40:60] = True
    with pytest.raises(ValueError, match=r"masks\[1\] \(1, 64, 64\) is larger than image_size \(32, 64\)"):
        gt_box_rois(torch.randn(2, 4, 16, 16), [masks[:, :32], masks], image_size=(32, 64))
    assert (
        gt_box_rois(torch.randn(2, 4, 16, 16), [masks[:, :32], masks], image_size=(64, 64)).feats.shape[0]
        == 1
    )


# ---------------------------------------------------------------- bad inputs

_F, _M = torch.zeros(1, 2, 4, 4), torch.zeros(2, 16, 16)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("x", []), {}, TypeError, "feats must be a torch.Tensor"),
        ((torch.zeros(1, 2, 4), []), {}, ValueError, r"feats must have 4 dimensions"),
        ((torch.zeros(1, 2, 4, 4, dtype=torch.int64), []), {}, TypeError, "floating-point"),
        ((torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 16, 16)), {}, TypeError, "masks must be a list"),
        ((torch.zeros(2, 2, 4, 4), [torch.zeros(1, 16, 16)]), {}, ValueError, "one tensor per image: 2"),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(16, 16)]), {}, ValueError, r"masks\[0\] must have 3"),
        (
            (torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)], [torch.zeros(3, 4)]),
            {},
            ValueError,
            r"boxes\[0\] must have shape \(G, 4\) with G = 2",
        ),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]), {"margin": -0.1}, ValueError, "margin"),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]), {"output_size": 0}, ValueError, "output_size"),
        (
            (torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]),
            {"ignore_band": 0.7},
            ValueError,
            "ignore_band",
        ),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]), {"sampling_ratio": 0}, ValueError, "sampling"),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]), {"stride": 0}, ValueError, "stride"),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]), {"stride": (4, 4, 4)}, ValueError, "stride"),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]), {"stride": "4"}, TypeError, "stride"),
        ((torch.zeros(1, 2, 4, 4), [torch.zeros(2, 16, 16)]), {"image_size": 16.0}, TypeError, "image_size"),
    ],
)
def test_bad_inputs(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gt_box_rois(*args, **kwargs)


_ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs MPS")),
]


@pytest.mark.parametrize("device", _ACCELERATORS)
def test_on_every_device_equals_the_cpu_result(device: str) -> None:
    masks = _scene(3)
    feats = torch.randn(2, 4, 12, 16)
    expected = gt_box_rois(feats, masks, output_size=9, margin=0.2)
    got = gt_box_rois(feats.to(device), [m.to(device) for m in masks], output_size=9, margin=0.2)
    assert got.feats.device.type == device and got.masks.device.type == device
    torch.testing.assert_close(got.feats.cpu(), expected.feats, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.masks.cpu(), expected.masks)
    assert torch.equal(got.instance_idx.cpu(), expected.instance_idx)


# ---------------------------------------------------------------- one check of margin and output_size


def _entry_point(name: str):  # type: ignore[no-untyped-def]
    """A callable taking (margin=..., output_size=...) that runs one of the three public checks."""
    if name == "gt_box_rois":
        return lambda **kw: gt_box_rois(torch.zeros(1, 2, 4, 4), [torch.zeros(1, 16, 16)], **kw)
    if name == "ultralytics":
        os.environ.setdefault("YOLO_OFFLINE", "1")
        pytest.importorskip("ultralytics")
        from ultralytics.nn.tasks import SegmentationModel

        from densecontrast.adapters import ultralytics as adapter

        model = SegmentationModel("yolov8n-seg.yaml", nc=2, verbose=False)
    else:
        pytest.importorskip("transformers")
        from test_adapters_transformers import tiny_mask2former

        from densecontrast.adapters import transformers as adapter

        model = tiny_mask2former()

    def call(**kw: object) -> None:
        adapter.attach(model, **kw).remove()

    return call


@pytest.mark.parametrize("entry", ["gt_box_rois", "ultralytics", "transformers"])
def test_margin_and_output_size_are_checked_alike_everywhere(entry: str) -> None:
    call = _entry_point(entry)
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"margin": "a"}, TypeError, r"margin must be a finite number >= 0; got 'a' \(str\)"),
        ({"margin": True}, TypeError, "margin must be"),
        ({"margin": -0.1}, ValueError, "margin must be a finite number >= 0; got -0.1"),
        ({"margin": math.nan}, ValueError, "margin must be"),
        ({"margin": math.inf}, ValueError, "margin must be"),
        ({"output_size": 28.0}, TypeError, r"output_size must be a positive int .*got 28.0 \(float\)"),
        ({"output_size": "28"}, TypeError, "output_size must be"),
        ({"output_size": (28, 2.0)}, TypeError, "output_size must be .* with int, float"),
        ({"output_size": (28, 28, 28)}, ValueError, "output_size must be .* got 3 values"),
        ({"output_size": 0}, ValueError, "output_size must be .* got 0"),
        ({"output_size": (7, -1)}, ValueError, "output_size must be"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            call(**kwargs)
    call(margin=0.25, output_size=[7, 5])
