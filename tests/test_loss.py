from __future__ import annotations

import warnings

import pytest
import torch
from _reference import autograd_loss, reference_loss
from _released import ReleasedDenseContrastiveLoss
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import densecontrast.gather as gather_module
from densecontrast import (
    DenseContrastiveLoss,
    PixelSamples,
    dense_contrastive_loss,
    projection,
    sample_pixels,
)


def make_batch(r: int = 5, c: int = 6, h: int = 8, w: int = 8, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(r, c, h, w, generator=g, dtype=dtype)
    masks = torch.zeros(r, h, w, dtype=torch.bool)
    for i in range(r):
        top, left = i % 3, (i * 2) % 4
        masks[i, top : top + 4, left : left + 4] = True
    return feats, masks


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("learnable", [False, True])
def test_matches_float64_reference(reduction: str, learnable: bool) -> None:
    feats, masks = make_batch()
    masks[1] = False  # one invalid RoI
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(
        k=3,
        tau=0.1,
        in_channels=6 if learnable else None,
        proj_channels=5 if learnable else None,
        reduction=reduction,
    )
    crit = crit.double()
    samples = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(1))
    assert samples.valid.tolist() == [True, False, True, True, True]
    out = crit(feats, masks, samples=samples)
    expected = reference_loss(feats, *samples, tau=0.1, projector=crit.projector, reduction=reduction)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_module_equals_function() -> None:
    feats, masks = make_batch(dtype=torch.float32)
    crit = DenseContrastiveLoss(k=4, tau=0.2, in_channels=6, proj_channels=7, reduction="none")
    samples = sample_pixels(masks, 4, generator=torch.Generator().manual_seed(0))
    by_module = crit(feats, masks, samples=samples)
    by_function = dense_contrastive_loss(
        feats, masks, k=4, tau=0.2, projector=crit.projector, reduction="none", samples=samples
    )
    assert torch.equal(by_module, by_function)
    # The generator path draws the same samples as an explicit sample_pixels call.
    from_generator = crit(feats, masks, generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_module, from_generator)


def test_deterministic_given_a_generator() -> None:
    feats, masks = make_batch(dtype=torch.float32)
    crit = DenseContrastiveLoss(k=4)
    a = crit(feats, masks, generator=torch.Generator().manual_seed(5))
    b = crit(feats, masks, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_matches_released_algorithm_with_identical_samples() -> None:
    """Replacement sampling + conv projection + mean over RoIs: the released code's numbers."""
    torch.manual_seed(0)
    feats, masks = make_batch(r=6, c=8, h=10, w=10, dtype=torch.float32)
    masks[2] = False
    released = ReleasedDenseContrastiveLoss(8, k=4, tau=0.07)
    ours = DenseContrastiveLoss(k=4, tau=0.07, in_channels=8, proj_channels=8, replacement=True)
    with torch.no_grad():
        ours.projector.fc1.weight.copy_(released.conv1.weight[:, :, 0, 0])
        ours.projector.fc1.bias.copy_(released.conv1.bias)
        ours.projector.fc2.weight.copy_(released.conv2.weight[:, :, 0, 0])
        ours.projector.fc2.bias.copy_(released.conv2.bias)
    samples = sample_pixels(masks, 4, replacement=True, generator=torch.Generator().manual_seed(2))
    expected = released(feats, masks, samples=samples[:3])
    torch.testing.assert_close(ours(feats, masks, samples=samples), expected, rtol=1e-5, atol=1e-6)


def test_the_released_algorithm_is_test_only_code() -> None:
    """The port of the released algorithm is a yardstick for tests and benchmarks, not part of the package."""
    import importlib.util

    assert importlib.util.find_spec("densecontrast._released") is None
    assert ReleasedDenseContrastiveLoss.__module__ == "_released"  # tests/_released.py


def test_gradcheck_whole_loss() -> None:
    feats, masks = make_batch(r=3, c=3, h=5, w=5)
    feats.requires_grad_(True)
    crit = DenseContrastiveLoss(k=2, tau=0.5, in_channels=3, proj_channels=4).double()
    samples = sample_pixels(masks, 2, generator=torch.Generator().manual_seed(0))
    params = list(crit.parameters())

    def fn(f: torch.Tensor, *p: torch.Tensor) -> torch.Tensor:
        names = [n for n, _ in crit.named_parameters()]
        return torch.func.functional_call(crit, dict(zip(names, p)), (f, masks), {"samples": samples})

    assert torch.autograd.gradcheck(fn, (feats, *[p.detach().requires_grad_() for p in params]))


@pytest.mark.filterwarnings("ignore:DenseContrastiveLoss. none of the:UserWarning")
@pytest.mark.parametrize("case", ["no_rois", "all_invalid"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_and_all_invalid_give_zero_in_graph(case: str, reduction: str) -> None:
    crit = DenseContrastiveLoss(k=4, in_channels=6, proj_channels=5, reduction=reduction)
    if case == "no_rois":
        feats, masks = torch.randn(0, 6, 8, 8), torch.zeros(0, 8, 8, dtype=torch.bool)
    else:
        feats, masks = torch.randn(3, 6, 8, 8), torch.zeros(3, 8, 8, dtype=torch.bool)
    feats.requires_grad_(True)
    loss = crit(feats, masks)
    assert loss.shape == () and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert feats.grad is not None
    for name, p in crit.named_parameters():
        assert p.grad is not None, name
        assert not bool(p.grad.any())


def test_reduction_none_has_zeros_at_invalid_rois() -> None:
    feats, masks = make_batch(dtype=torch.float32)
    masks[3] = True  # no background pixel left
    out = DenseContrastiveLoss(k=4, reduction="none")(feats, masks)
    assert out.shape == (5,)
    assert out[3].item() == 0.0 and bool((out[[0, 1, 2, 4]] > 0).all())


def test_mean_is_over_valid_rois_and_sum_is_their_sum() -> None:
    feats, masks = make_batch(dtype=torch.float32)
    masks[0] = False
    samples = sample_pixels(masks, 4, generator=torch.Generator().manual_seed(0))
    per_roi = DenseContrastiveLoss(k=4, reduction="none")(feats, masks, samples=samples)
    total = DenseContrastiveLoss(k=4, reduction="sum")(feats, masks, samples=samples)
    mean = DenseContrastiveLoss(k=4, reduction="mean")(feats, masks, samples=samples)
    torch.testing.assert_close(total, per_roi.sum())
    torch.testing.assert_close(mean, per_roi.sum() / 4)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.float32])
def test_ignore_pixels_and_integer_masks_match_the_reference(dtype: torch.dtype) -> None:
    feats, masks = make_batch()
    coded = masks.to(dtype)
    coded[:, 0, :] = -1  # a row of ignore pixels in every RoI
    coded[1, 1:, :] = -1  # RoI 1: instance pixels only, no background left -> invalid
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(k=3, tau=0.2, in_channels=6, proj_channels=5).double()
    out = crit(feats, coded, generator=torch.Generator().manual_seed(3))
    samples = sample_pixels(coded, 3, generator=torch.Generator().manual_seed(3))
    assert samples.valid.tolist() == [True, False, True, True, True]
    flat = coded.flatten(1)
    for index, value in ((samples.anchors, 1), (samples.positives, 1), (samples.negatives, 0)):
        assert bool((flat.gather(1, index)[samples.valid] == value).all())  # -1 is never sampled
    expected = reference_loss(feats, *samples, tau=0.2, projector=crit.projector)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_integer_masks_without_ignore_equal_bool_masks() -> None:
    feats, masks = make_batch()
    crit = DenseContrastiveLoss(k=3, tau=0.2).double()
    by_bool = crit(feats, masks, generator=torch.Generator().manual_seed(1))
    for dtype in (torch.uint8, torch.int64, torch.float64):
        assert torch.equal(crit(feats, masks.to(dtype), generator=torch.Generator().manual_seed(1)), by_bool)


def test_bf16_autocast_small_tau_large_norms_finite() -> None:
    torch.manual_seed(0)
    feats, masks = make_batch(r=8, c=16, h=14, w=14, dtype=torch.float32)
    feats = (feats * 1e3).requires_grad_(True)
    crit = DenseContrastiveLoss(k=8, tau=0.01, in_channels=16, proj_channels=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = crit(feats, masks)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert bool(torch.isfinite(feats.grad).all())
    assert all(bool(torch.isfinite(p.grad).all()) for p in crit.parameters())


def test_channels_last_feats_give_the_same_loss_and_gradient() -> None:
    feats, masks = make_batch(dtype=torch.float32)
    samples = sample_pixels(masks, 4, generator=torch.Generator().manual_seed(0))
    crit = DenseContrastiveLoss(k=4, in_channels=6, proj_channels=5)
    a = feats.clone().requires_grad_(True)
    b = feats.clone().to(memory_format=torch.channels_last).requires_grad_(True)
    la, lb = crit(a, masks, samples=samples), crit(b, masks, samples=samples)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(a.grad, b.grad)


def test_runs_on_device(device: str) -> None:
    feats, masks = make_batch(dtype=torch.float32)
    crit = DenseContrastiveLoss(k=4, in_channels=6).to(device)
    loss = crit(feats.to(device).requires_grad_(), masks.to(device))
    assert loss.device.type == device and torch.isfinite(loss)


def test_repr_and_attributes() -> None:
    crit = DenseContrastiveLoss()
    assert (crit.k, crit.tau, crit.reduction, crit.replacement, crit.projector) == (
        32,
        0.07,
        "mean",
        False,
        None,
    )
    assert repr(crit) == (
        "DenseContrastiveLoss(k=32, tau=0.07, similarity=cosine, replacement=False, reduction='mean')"
    )
    learned = DenseContrastiveLoss(in_channels=256)
    assert learned.projector.fc2.out_features == 256
    assert "similarity=projector" in repr(learned) and "256 -> 256 -> 256" in repr(learned)
    assert DenseContrastiveLoss.__doc__ is not None and "weaker variant" in DenseContrastiveLoss.__doc__[:400]


def test_any_projector_module() -> None:
    """projector= takes any module mapping (..., C) to (..., D), as the function does."""
    feats, masks = make_batch()
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4)).double()
    samples = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(0))
    crit = DenseContrastiveLoss(k=3, tau=0.3, projector=mlp)
    assert crit.projector is mlp and "similarity=projector" in repr(crit)
    out = crit(feats, masks, samples=samples)
    torch.testing.assert_close(
        out, dense_contrastive_loss(feats, masks, k=3, tau=0.3, projector=mlp, samples=samples)
    )
    torch.testing.assert_close(
        out, autograd_loss(feats, *samples, tau=0.3, projector=mlp), rtol=1e-10, atol=1e-12
    )
    with pytest.raises(ValueError, match=r"pass either in_channels .* or projector"):
        DenseContrastiveLoss(in_channels=6, projector=mlp)
    with pytest.raises(TypeError, match=r"projector must be None or an nn\.Module"):
        DenseContrastiveLoss(projector=torch.tanh)  # type: ignore[arg-type]


F = torch.randn(2, 3, 8, 8)
M = torch.zeros(2, 8, 8, dtype=torch.bool)


@pytest.mark.parametrize(
    ("feats", "masks", "error", "match"),
    [
        (
            torch.randn(3, 8, 8),
            M,
            ValueError,
            r"feats must have 4 dimensions \(R, C, H, W\); got shape \(3, 8, 8\)",
        ),
        (
            F,
            torch.zeros(2, 1, 8, 8, dtype=torch.bool),
            ValueError,
            r"got masks \(2, 1, 8, 8\) for feats \(2, 3, 8, 8\)",
        ),
        (
            F,
            torch.zeros(5, 8, 8, dtype=torch.bool),
            ValueError,
            r"masks must have shape \(R, H, W\) matching feats",
        ),
        (F, torch.zeros(2, 8, 7, dtype=torch.bool), ValueError, r"here \(2, 8, 8\); got masks \(2, 8, 7\)"),
        (torch.ones(2, 3, 8, 8, dtype=torch.int64), M, TypeError, "feats must be a floating-point tensor"),
        (F, torch.full((2, 8, 8), 0.7), ValueError, "threshold soft masks"),
        (F, "masks", TypeError, "masks must be a torch.Tensor"),
        (
            F,
            torch.zeros(2, 8, 8, dtype=torch.bool, device="meta"),
            ValueError,
            "tensors must be on one device",
        ),
    ],
)
def test_bad_inputs(feats: object, masks: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        DenseContrastiveLoss(k=2)(feats, masks)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be a positive int; got 0"),
        ({"k": 3.5}, TypeError, "k must be a positive int"),
        ({"tau": -1.0}, ValueError, "tau must be a finite positive number"),
        ({"tau": float("nan")}, ValueError, "tau must be a finite positive number"),
        ({"tau": None}, TypeError, "tau must be a finite positive number"),
        ({"reduction": "batchmean"}, ValueError, "reduction must be one of"),
        ({"in_channels": 0}, ValueError, "in_channels must be a positive int"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        DenseContrastiveLoss(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"proj_channels": 64}, r"proj_channels=64 was given without in_channels.*pass in_channels=C"),
        (
            {"proj_channels": 64, "projector": nn.Linear(8, 4)},
            r"proj_channels=64 was given with projector=Linear, whose output size is its own",
        ),
    ],
    ids=["no_in_channels", "with_projector"],
)
def test_proj_channels_is_never_ignored(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DenseContrastiveLoss(**kwargs)
    assert DenseContrastiveLoss(in_channels=8).projector.out_channels == 256  # the default
    assert DenseContrastiveLoss(in_channels=8, proj_channels=64).projector.out_channels == 64


def test_bad_samples() -> None:
    feats, masks = make_batch(dtype=torch.float32)
    s = sample_pixels(masks, 4)
    with pytest.raises(ValueError, match=r"samples.anchors must have shape \(R, K\) with R = 5"):
        DenseContrastiveLoss(k=4)(feats, masks, samples=PixelSamples(s.anchors[:2], *s[1:]))
    with pytest.raises(TypeError, match="samples must be a PixelSamples"):
        DenseContrastiveLoss(k=4)(feats, masks, samples=s.anchors)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"samples\.valid must be a bool tensor"):
        DenseContrastiveLoss(k=4)(feats, masks, samples=PixelSamples(*s[:3], s.valid.long()))


def test_projector_channel_mismatch_is_explained() -> None:
    feats, masks = make_batch(c=6, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"feats must have 4 channels for the projector.s in_channels=4"):
        DenseContrastiveLoss(k=4, in_channels=4)(feats, masks)


# --- No silent zero: last_valid_rois and the warning -----------------------------------------------------


def test_last_valid_rois_counts_the_rois_of_the_last_call() -> None:
    feats, masks = make_batch(dtype=torch.float32)
    masks[1] = False
    masks[3] = True  # two invalid RoIs of 5
    crit = DenseContrastiveLoss(k=4, in_channels=6, proj_channels=5)
    assert crit.last_valid_rois is None  # before the first call
    crit(feats.requires_grad_(True), masks)
    count = crit.last_valid_rois
    assert isinstance(count, torch.Tensor) and count.shape == () and count.dtype == torch.int64
    assert not count.requires_grad and count.device == feats.device
    assert int(count) == 3 == int(sample_pixels(masks, 4).valid.sum())
    _, _ = crit.forward_passthrough(feats[:2], masks[:2])
    assert int(crit.last_valid_rois) == 1  # the last call, through either entry
    samples = sample_pixels(masks, 4)
    crit(feats, masks, samples=PixelSamples(*samples[:3], torch.tensor([True, False, False, False, True])))
    assert int(crit.last_valid_rois) == 2  # given samples: their validity
    crit.eval()
    crit(feats[:0], masks[:0])
    assert int(crit.last_valid_rois) == 0  # no RoI; counted in eval mode too
    crit(torch.randn(2, 6, 3, 3), torch.ones(2, 3, 3, dtype=torch.bool))
    assert int(crit.last_valid_rois) == 0  # a grid too small for k: the early exit counts too


def _warnings_of(fn) -> list[warnings.WarningMessage]:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if "RoIs of a training call was valid" in str(w.message)]


@pytest.mark.parametrize("replacement", [False, True])
def test_warns_once_when_a_training_call_has_no_valid_roi(replacement: bool) -> None:
    feats, masks = make_batch(dtype=torch.float32)
    empty = torch.zeros_like(masks)  # no instance pixel: no RoI is valid
    crit = DenseContrastiveLoss(k=4, replacement=replacement)
    assert _warnings_of(lambda: crit(feats, masks)) == []  # valid RoIs: silent
    assert _warnings_of(lambda: crit(feats[:0], masks[:0])) == []  # no RoI at all: nothing to change
    crit.eval()
    assert _warnings_of(lambda: crit(feats, empty)) == []  # eval mode: silent
    crit.train()
    caught = _warnings_of(lambda: crit(feats, empty))
    assert len(caught) == 1 and caught[0].category is UserWarning
    assert caught[0].filename == __file__  # attributed to the caller's line, not to the loss
    need = "more than k=4" if replacement else "at least k=4"
    message = str(caught[0].message)
    assert "none of the 5 RoIs" in message and need in message and "8 x 8 grid" in message
    assert "Lower k" in message and "margin" in message and "last_valid_rois" in message
    assert _warnings_of(lambda: crit(feats, empty)) == []  # once per loss ...
    assert _warnings_of(lambda: crit.forward_passthrough(feats, empty)) == []
    other = DenseContrastiveLoss(k=4, replacement=replacement)
    assert len(_warnings_of(lambda: other(feats, empty))) == 1  # ... instance


def test_the_warning_state_survives_copies_and_pickling(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import copy

    feats, masks = make_batch(dtype=torch.float32)
    crit = DenseContrastiveLoss(k=4)
    assert len(_warnings_of(lambda: crit(feats, torch.zeros_like(masks)))) == 1
    torch.save(crit, tmp_path / "crit.pt")
    for clone in (copy.deepcopy(crit), torch.load(tmp_path / "crit.pt", weights_only=False)):
        assert int(clone.last_valid_rois) == 0
        assert _warnings_of(lambda c=clone: c(feats, torch.zeros_like(masks))) == []  # already warned


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_warning_reads_the_count_without_synchronising() -> None:
    """On CUDA the count is copied without blocking and read by a later call once the device is done."""
    feats, masks = make_batch(dtype=torch.float32)
    feats, empty = feats.cuda(), torch.zeros_like(masks).cuda()
    crit = DenseContrastiveLoss(k=4, in_channels=6).cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        first = _warnings_of(lambda: crit(feats, empty).backward())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()  # the first call's count has landed
    torch.cuda.set_sync_debug_mode("error")
    try:
        second = _warnings_of(lambda: crit(feats, empty))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(first) + len(second) == 1
    assert crit.last_valid_rois.device.type == "cuda" and int(crit.last_valid_rois) == 0


class _RecordOps(TorchDispatchMode):
    """Every non-view ATen operation dispatched while active, in order: its name and output elements."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.written: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.ops.append(func.overloadpacket.__name__)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            self.written.append(sum(t.numel() for t in outs if isinstance(t, torch.Tensor)))
        return out


def _step_ops(
    num_rois: int, channels: int = 8, size: int = 12, training: bool = True, host_checks: bool = True
) -> _RecordOps:
    """The ATen ops of one forward + backward on the CPU; with ``host_checks=False``, the gather takes
    the path of a device whose values it cannot read for free (an accelerator, a compiled graph)."""
    feats, masks = make_batch(r=num_rois, c=channels, h=size, w=size, dtype=torch.float32)
    feats.requires_grad_(True)
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(k=4, in_channels=channels, proj_channels=channels).train(training)
    original = gather_module._host_checks
    gather_module._host_checks = original if host_checks else (lambda t: False)
    try:
        with _RecordOps() as recorder:
            crit(feats, masks, generator=torch.Generator().manual_seed(0)).backward()
    finally:
        gather_module._host_checks = original
    return recorder


# Reading a device value on the host, or building a tensor from host data (a host-to-device copy on an
# accelerator), or a data-dependent shape.
HOST_ROUND_TRIPS = {"_local_scalar_dense", "item", "nonzero", "lift_fresh", "lift_fresh_copy", "_to_copy"}


@pytest.fixture(params=["conv", "conv_cl", "gemm"])
def projection_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Pin the projection's path (otherwise measured once per process on the CPU) to each in turn."""
    monkeypatch.setattr(projection, "_forced_path", request.param)
    return str(request.param)


def test_no_host_round_trip_and_no_loop_over_rois(projection_path: str) -> None:
    """The op sequence is the same for 3 and 48 RoIs, and on a device whose values cannot be read for
    free nothing reads a value back to the host.

    The one exception there is the CPU-only check of the valid-RoI count in training mode (a read of one
    CPU scalar, free there); on CUDA that count is copied without blocking (see the CUDA test above).
    Every projection path (1x1 convolutions channels-first and channels-last, GEMMs) is checked.
    """
    small, large = _step_ops(3, host_checks=False).ops, _step_ops(48, host_checks=False).ops
    assert small == large
    assert [op for op in small if op in HOST_ROUND_TRIPS] == ["_local_scalar_dense"]
    evaluation = _step_ops(3, training=False, host_checks=False).ops
    assert not HOST_ROUND_TRIPS & set(evaluation)
    assert [op for op in small if op != "_local_scalar_dense"] == evaluation


def test_the_cpu_reads_only_the_gathers_two_checks(projection_path: str) -> None:
    """On the CPU the gather reads two booleans (whether the index already increases, whether every RoI
    is valid) and, as the index does not increase, sorts it and puts the rows back in order; the op
    sequence still does not depend on the number of RoIs."""
    small, large = _step_ops(3).ops, _step_ops(48).ops
    assert small == large
    device_path = _step_ops(3, host_checks=False).ops
    assert [op for op in small if op in HOST_ROUND_TRIPS] == ["_local_scalar_dense"] * 3
    assert small.count("sort") == device_path.count("sort") + 1
    assert small.count("gather") == device_path.count("gather") + 2  # back to the caller's order, and back
    assert "where" in device_path and "where" not in small  # every RoI valid: no masking pass


def test_forward_backward_op_count_stays_bounded(projection_path: str) -> None:
    """A bound, not a pin: forward + backward at the paper's setting (R = 64, C = 256, 28 x 28, K = 32)
    on the CPU dispatch at most 66 non-view ATen ops with the convolution projection (65 with torch
    2.14, ten of them the gather's order checks and sort, see gather.py, two the mask of norms below eps
    in infonce.py; older torch versions decompose a few backward formulas further) and at most 72 with
    the GEMM projection (71 with torch 2.14: a copy into rows each way, and separate GEMMs and bias
    sums); the released algorithm's loop dispatches thousands. What they write grows linearly with R
    (the released backward writes a full-size gradient per RoI, which grows with R squared)."""
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(k=32, tau=0.07, in_channels=256)
    written = {}
    for r in (16, 64):
        feats = torch.randn(r, 256, 28, 28, requires_grad=True)
        masks = torch.zeros(r, 28, 28, dtype=torch.bool)
        masks[:, 6:20, 8:22] = True
        for _ in range(2):  # the second step counts: nothing is cached between steps
            feats.grad = None
            for p in crit.parameters():
                p.grad = None
            with _RecordOps() as recorder:
                crit(feats, masks).backward()
        assert len(recorder.ops) <= {"conv": 66, "conv_cl": 67, "gemm": 72}[projection_path], recorder.ops
        assert not (HOST_ROUND_TRIPS - {"_local_scalar_dense"}) & set(recorder.ops)
        written[r] = sum(recorder.written)
    # 4x the RoIs: about 4x the elements written (the projection's weights add a constant), never 16x.
    assert written[64] <= 4.5 * written[16], written
