"""Bad, extreme and non-finite inputs: the loss fails early and clearly, or gives the documented result."""

from __future__ import annotations

import pytest
import torch
from _reference import autograd_loss, reference_loss

import densecontrast.gather
import densecontrast.loss
import densecontrast.sampling
from densecontrast import (
    DenseContrastiveLoss,
    dense_contrastive_loss,
    dense_info_nce,
    gather_pixels,
    loss_from_rows,
    sample_index,
    sample_pixels,
)


def batch(r: int = 4, c: int = 5, size: int = 6, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(r, c, size, size, generator=g, dtype=dtype)
    masks = torch.zeros(r, size, size, dtype=torch.bool)
    for i in range(r):
        masks[i, i % 2 : i % 2 + 3, 1:4] = True
    return feats, masks


# --- 1. Double backward: exact, never a silent constant ------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("learnable", [False, True])
def test_gradient_penalty_matches_plain_autograd(reduction: str, learnable: bool) -> None:
    feats, masks = batch()
    masks[2] = False  # one invalid RoI
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(
        k=2,
        tau=0.3,
        in_channels=5 if learnable else None,
        proj_channels=4 if learnable else None,
        reduction=reduction,
    ).double()
    samples = sample_pixels(masks, 2, generator=torch.Generator().manual_seed(1))
    params = list(crit.parameters())

    def penalty(loss_fn) -> list[torch.Tensor]:
        f = feats.clone().requires_grad_(True)
        loss = loss_fn(f)
        weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
        (grad,) = torch.autograd.grad((loss * weights).sum(), f, create_graph=True)
        return torch.autograd.grad(grad.pow(2).sum(), [f, *params], allow_unused=True, materialize_grads=True)

    ours = penalty(lambda f: crit(f, masks, samples=samples))
    plain = penalty(
        lambda f: autograd_loss(f, *samples, tau=0.3, projector=crit.projector, reduction=reduction)
    )
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_gradgradcheck_whole_loss_and_info_nce() -> None:
    feats, masks = batch(r=2, c=3, size=4)
    crit = DenseContrastiveLoss(k=2, tau=0.5, in_channels=3, proj_channels=2).double()
    samples = sample_pixels(masks, 2, generator=torch.Generator().manual_seed(0))
    f = feats.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x: crit(x, masks, samples=samples), (f,))
    x = [torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradgradcheck(lambda a, p, n: dense_info_nce(a, p, n, tau=0.4), x)


# --- 2. Non-finite features of excluded RoIs never reach a gradient -------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("passthrough", [False, True])
def test_non_finite_excluded_roi_contributes_exactly_zero(
    bad: float, reduction: str, passthrough: bool
) -> None:
    feats, masks = batch(dtype=torch.float32)
    masks[1] = False  # invalid: its loss is excluded ...
    poisoned = feats.clone()
    poisoned[1] = bad  # ... and its features are not finite
    cleaned = feats.clone()
    cleaned[1] = 0.0
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(k=3, tau=0.2, in_channels=5, proj_channels=4, reduction=reduction)
    samples = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(0))

    def grads(x: torch.Tensor) -> list[torch.Tensor]:
        x = x.clone().requires_grad_(True)
        crit.zero_grad(set_to_none=True)
        if passthrough:
            _, loss = crit.forward_passthrough(x, masks, samples=samples)  # feats_out left unused
        else:
            loss = crit(x, masks, samples=samples)
        (loss[0] if reduction == "none" else loss).backward()  # with "none": another RoI's entry
        assert torch.isfinite(loss).all()
        return [x.grad, *(p.grad for p in crit.parameters())]

    for got, expected in zip(grads(poisoned), grads(cleaned)):
        assert torch.equal(got, expected)
    assert not grads(poisoned)[0][1].any()


def test_loss_from_rows_zeroes_rows_of_invalid_rois() -> None:
    feats, masks = batch(dtype=torch.float32)
    masks[0] = False
    samples = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(0))
    rows = gather_pixels(feats, sample_index(samples)).clone()
    rows[0] = float("nan")
    rows.requires_grad_(True)
    head = DenseContrastiveLoss(k=3, in_channels=5).projector
    loss = loss_from_rows(rows, samples, tau=0.1, projector=head)
    loss.backward()
    assert torch.isfinite(loss) and not rows.grad[0].any()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


# --- 3. Zero-size grids -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:DenseContrastiveLoss. none of the:UserWarning")
@pytest.mark.parametrize(("h", "w"), [(0, 5), (5, 0), (0, 0)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_zero_size_grid_gives_zero_in_graph(h: int, w: int, reduction: str) -> None:
    feats = torch.randn(3, 4, h, w, requires_grad=True)
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    crit = DenseContrastiveLoss(k=2, in_channels=4, reduction=reduction)
    loss = crit(feats, masks)
    assert loss.shape == ((3,) if reduction == "none" else ()) and not loss.any()
    loss.sum().backward()
    assert feats.grad is not None and feats.grad.shape == feats.shape
    assert all(p.grad is not None and not p.grad.any() for p in crit.parameters())
    s = sample_pixels(masks, 2)
    assert s.anchors.shape == (3, 2) and not s.valid.any()


def test_gather_on_an_empty_grid_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"feats \(2, 3, 0, 4\) has an empty H x W grid, so index \(2, 1\)"):
        gather_pixels(torch.randn(2, 3, 0, 4), torch.zeros(2, 1, dtype=torch.int64))
    empty = torch.zeros(2, 0, dtype=torch.int64)
    assert gather_pixels(torch.randn(2, 3, 0, 4), empty).shape == (2, 0, 3)


# --- 4. Public helpers validate, once per call path -------------------------------------------------------


def _rows_and_samples():
    feats, masks = batch(dtype=torch.float32)
    samples = sample_pixels(masks, 2, generator=torch.Generator().manual_seed(0))
    return gather_pixels(feats, sample_index(samples)), samples


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"reduction": "avg"}, ValueError, r"reduction must be one of \('mean', 'sum', 'none'\); got 'avg'"),
        ({"tau": -1.0}, ValueError, "tau must be a finite positive number; got -1.0"),
        ({"tau": 0}, ValueError, "tau must be a finite positive number; got 0"),
        ({"rows": "narrow"}, ValueError, r"rows must have shape \(R, A \+ P \+ Q, C\) with A \+ P \+ Q = 6"),
        ({"rows": "int"}, TypeError, "rows must be a floating-point tensor"),
        ({"samples": "tuple3"}, TypeError, "samples must be a PixelSamples"),
        ({"projector": "relu"}, TypeError, "projector must be None or an nn.Module"),
    ],
)
def test_loss_from_rows_rejects_bad_arguments(change: dict, error: type[Exception], match: str) -> None:
    rows, samples = _rows_and_samples()
    kwargs: dict = {"tau": 0.1, "reduction": "mean", "projector": None}
    kwargs.update({k: v for k, v in change.items() if k in ("tau", "reduction")})
    if change.get("rows") == "narrow":
        rows = rows[:, :5]
    if change.get("rows") == "int":
        rows = rows.long()
    if change.get("samples") == "tuple3":
        samples = tuple(samples[:3])  # type: ignore[assignment]
    if change.get("projector") == "relu":
        kwargs["projector"] = torch.relu
    with pytest.raises(error, match=match):
        loss_from_rows(rows, samples, **kwargs)


def _spy_on_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the argument name of every check_tensor / check_positive_int call in the core modules."""
    calls: list[str] = []
    for module in (densecontrast.loss, densecontrast.sampling, densecontrast.gather):
        for fn_name in ("check_tensor", "check_positive_int"):
            original = getattr(module, fn_name, None)
            if original is None:
                continue

            def spy(name, value, *args, _original=original):  # type: ignore[no-untyped-def]
                calls.append(name)
                return _original(name, value, *args)

            monkeypatch.setattr(module, fn_name, spy)
    return calls


@pytest.mark.parametrize("path", ["module", "function", "passthrough"])
def test_each_argument_is_checked_once_per_call(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    feats, masks = batch(dtype=torch.float32)
    crit = DenseContrastiveLoss(k=2)
    calls = _spy_on_checks(monkeypatch)
    if path == "module":
        crit(feats, masks)
    elif path == "passthrough":
        crit.forward_passthrough(feats, masks)
    else:
        dense_contrastive_loss(feats, masks, k=2)
    expected = ["feats", "masks"] + (["k"] if path == "function" else [])
    assert sorted(calls) == sorted(expected)


# --- 5. Extreme tau and k ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1e-300, 1e-39, 5e-39])
def test_tau_whose_inverse_overflows_float32_is_rejected(tau: float) -> None:
    with pytest.raises(ValueError, match=r"tau must be at least 5\.88e-39, so that 2 / tau is finite"):
        DenseContrastiveLoss(tau=tau)
    with pytest.raises(ValueError, match="tau must be at least"):
        dense_info_nce(torch.randn(1, 1, 2), torch.randn(1, 1, 2), torch.randn(1, 1, 2), tau=tau)


def test_smallest_allowed_tau_gives_a_finite_loss() -> None:
    feats, masks = batch(dtype=torch.float32)
    feats.requires_grad_(True)
    loss = DenseContrastiveLoss(k=2, tau=1e-30)(feats, masks)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


@pytest.mark.filterwarnings("ignore:DenseContrastiveLoss. none of the:UserWarning")
@pytest.mark.parametrize("replacement", [False, True])
def test_k_far_above_the_grid_exits_early(replacement: bool) -> None:
    k = 2**40  # R x 3 x K int64 would be petabytes
    feats, masks = batch(r=3, dtype=torch.float32)
    s = sample_pixels(masks, k, replacement=replacement)
    assert s.anchors.shape == (3, k) and not s.valid.any()
    feats.requires_grad_(True)
    crit = DenseContrastiveLoss(k=k, in_channels=5, replacement=replacement)
    loss = crit(feats, masks)
    loss.backward()
    assert loss.item() == 0.0 and not feats.grad.any()
    assert all(p.grad is not None for p in crit.parameters())


def test_reference_agrees_with_autograd_reference() -> None:
    """The two test references (loops and plain autograd) agree, so either can serve as the yardstick."""
    feats, masks = batch()
    masks[3] = False
    samples = sample_pixels(masks, 2, generator=torch.Generator().manual_seed(4))
    head = DenseContrastiveLoss(k=2, in_channels=5, proj_channels=3).double().projector
    for reduction in ("mean", "none"):
        torch.testing.assert_close(
            autograd_loss(feats, *samples, tau=0.2, projector=head, reduction=reduction),
            reference_loss(feats, *samples, tau=0.2, projector=head, reduction=reduction),
        )


# --- Checkpoints and distributed training -----------------------------------------------------------------


def test_state_dict_round_trip_and_whole_module_save(tmp_path) -> None:
    torch.manual_seed(0)
    crit = DenseContrastiveLoss(k=3, tau=0.2, in_channels=5, proj_channels=4)
    assert sorted(crit.state_dict()) == [
        "projector.fc1.bias",
        "projector.fc1.weight",
        "projector.fc2.bias",
        "projector.fc2.weight",
    ]
    restored = DenseContrastiveLoss(k=3, tau=0.2, in_channels=5, proj_channels=4)
    restored.load_state_dict(crit.state_dict())
    torch.save(crit, tmp_path / "crit.pt")
    loaded = torch.load(tmp_path / "crit.pt", weights_only=False)
    feats, masks = batch(dtype=torch.float32)
    expected = crit(feats, masks, generator=torch.Generator().manual_seed(0))
    for other in (restored, loaded):
        assert torch.equal(other(feats, masks, generator=torch.Generator().manual_seed(0)), expected)
    assert repr(loaded) == repr(crit)
    assert DenseContrastiveLoss(k=3).state_dict() == {}  # cosine similarity: nothing to save


_DDP_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
from torch import nn
from densecontrast import DenseContrastiveLoss

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 1)
        self.dcl = DenseContrastiveLoss(k=4, in_channels=8)

    def forward(self, images, masks):
        return self.dcl(self.head(images), masks)

def run(rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = Net()
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
    for step in range(2):
        images = torch.randn(3, 3, 10, 10)
        masks = torch.zeros(3, 10, 10, dtype=torch.bool)
        if rank == 0:
            masks[:, 2:7, 2:7] = True  # rank 1 has no valid RoI (and at step 1 no RoI at all)
        elif step == 1:
            images, masks = images[:0], masks[:0]
        ddp(images, masks).backward()
        for p in model.parameters():
            gathered = [torch.zeros_like(p.grad) for _ in range(2)]
            dist.all_gather(gathered, p.grad)
            assert torch.equal(gathered[0], gathered[1]), "gradients differ across ranks"
        model.zero_grad()
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} ok", flush=True)
    # Leave without running C++ static destructors: torch 2.14's gloo teardown at interpreter exit aborts
    # now and then ("terminate called without an active exception") after all the work above is done.
    os._exit(0)

if __name__ == "__main__":
    torch.multiprocessing.spawn(run, nprocs=2)
    print("ok")
"""


@pytest.mark.slow
def test_ddp_rank_without_valid_rois_keeps_every_parameter_in_the_reduction(tmp_path) -> None:
    """Two gloo processes, one with no valid RoI (then no RoI): DDP's reduction completes, grads agree."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(port)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 ok" in done.stdout and "rank 1 ok" in done.stdout and done.stdout.strip().endswith("ok")
