"""Tests of the capture lifecycle every adapter shares (densecontrast.adapters._base).

A toy framework (a two-layer model whose first layer's output is the "features" and whose output gets
the loss) exercises the lifecycle alone: steps per call and per thread, clearing on every exit path,
copies, the criterion's dtype, and the statistics the handle exposes. Each framework's test file runs
the same properties on the real models.
"""

from __future__ import annotations

import copy
import pickle
import time
import warnings
from typing import Any

import pytest
import torch
from _helpers import run_in_threads
from torch import Tensor, nn

from densecontrast import DenseContrastiveLoss
from densecontrast.adapters import DEFAULT_WEIGHT, DenseContrastHandle
from densecontrast.adapters._base import Framework, find_handle
from densecontrast.adapters._checks import build_criterion


class _Slow(nn.Module):
    """Sleeps, so that threads interleave between the capture and the loss."""

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(0.002)
        return x


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Conv2d(2, 2, 1)
        self.slow = _Slow()

    def forward(self, x: Tensor) -> Tensor:
        return self.slow(self.layer(x))


class _ToyFramework(Framework):
    def install(self, handle: DenseContrastHandle) -> None:
        handle.add_hook(self.layer.register_forward_hook(self._on_layer))
        handle.add_hook(handle.model.register_forward_hook(self._on_output))

    def begin(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        return {} if module.training else None

    def _on_layer(self, module: nn.Module, args: Any, output: Tensor) -> None:
        step = self.handle.current_step()
        if step is not None:
            step.values["feats"] = output

    def _on_output(self, module: nn.Module, args: Any, output: Tensor) -> Any:
        step = self.handle.current_step()
        if step is None:
            return None
        feats = step.values.pop("feats")
        masks = torch.zeros(feats.shape[0], *feats.shape[2:], dtype=torch.bool)
        masks[:, :, : feats.shape[-1] // 2] = True  # half instance, half not: every RoI can be valid
        return output, self.handle.evaluate(step, feats, masks)


class _MeanLoss(nn.Module):
    """A deterministic criterion: the mean of the features (so each call's loss names its input)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, feats: Tensor, masks: Tensor) -> Tensor:
        return self.scale * feats.mean()


def _attached(
    weight: float = 2.0, criterion: nn.Module | None = None
) -> tuple[nn.Module, DenseContrastHandle]:
    torch.manual_seed(0)
    model = _Toy().train()
    with torch.no_grad():  # the identity, so the features are the input
        model.layer.weight.copy_(torch.eye(2)[:, :, None, None])
        model.layer.bias.zero_()
    handle = DenseContrastHandle(model, criterion or _MeanLoss(), _ToyFramework(model.layer), weight=weight)
    return model, handle


@pytest.mark.parametrize("framework", ["torchvision", "transformers", "ultralytics"])
def test_default_weight_is_the_papers_and_every_attach_uses_it(framework: str) -> None:
    import importlib
    import inspect

    pytest.importorskip(framework)
    module = importlib.import_module(f"densecontrast.adapters.{framework}")
    assert DEFAULT_WEIGHT == 0.3  # from the evidence study's tuning split (docs/evidence.md)
    assert inspect.signature(module.attach).parameters["weight"].default is DEFAULT_WEIGHT
    if framework == "ultralytics":
        assert module.DenseContrastSegmentationTrainer.dcl_weight is DEFAULT_WEIGHT
        assert module.DenseContrastHandle is DenseContrastHandle


def test_one_handle_class_for_every_framework_and_the_old_name_warns() -> None:
    pytest.importorskip("ultralytics")
    pytest.importorskip("transformers")
    from densecontrast.adapters import torchvision, transformers, ultralytics

    assert torchvision.DenseContrastHandle is transformers.DenseContrastHandle is DenseContrastHandle
    assert ultralytics.DenseContrastHandle is DenseContrastHandle
    with pytest.warns(DeprecationWarning, match="UltralyticsHandle is deprecated; use .*DenseContrastHandle"):
        old = ultralytics.UltralyticsHandle
    assert old is DenseContrastHandle
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ultralytics.nope  # noqa: B018


def test_a_step_computes_the_weighted_loss_and_records_it() -> None:
    model, handle = _attached(weight=2.0)
    _, term = model(torch.full((3, 2, 4, 4), 0.5))
    torch.testing.assert_close(term, torch.tensor(1.0))
    assert torch.equal(handle.last_loss, term.detach()) and handle.last_num_rois == 3
    assert handle.last_valid_rois is None  # _MeanLoss does not report it
    assert handle.pending_steps == 0


def test_last_valid_rois_is_read_from_the_criterion_when_it_reports_it() -> None:
    crit = _MeanLoss()
    model, handle = _attached(criterion=crit)
    crit.last_valid_rois = torch.tensor(2)  # what DenseContrastiveLoss sets after each call
    model(torch.ones(3, 2, 4, 4))
    assert handle.last_valid_rois is crit.last_valid_rois


def test_eval_and_removal_leave_the_model_as_it_was() -> None:
    model, handle = _attached()
    x = torch.randn(2, 2, 4, 4)
    out = model.eval()(x)
    assert isinstance(out, Tensor) and handle.pending_steps == 0
    handle.remove()
    assert not handle.attached and not hasattr(model, "dense_contrast") and find_handle(model) is None
    assert isinstance(model.train()(x), Tensor)
    handle.remove()  # idempotent


def test_an_exception_drops_the_step() -> None:
    model, handle = _attached()
    boom = model.slow.register_forward_hook(lambda m, a, o: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.ones(1, 2, 4, 4))
    assert handle.pending_steps == 0
    boom.remove()
    assert model(torch.ones(1, 2, 4, 4))[1] > 0


def test_threads_stepping_one_model_each_get_their_own_captures() -> None:
    model, handle = _attached(weight=1.0)
    results: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def run(index: int) -> None:
        for _ in range(15):
            _, term = model(torch.full((1, 2, 3, 3), float(index + 1)))
            results[index].append(float(term.detach()))

    run_in_threads(run, range(3))
    for index, terms in results.items():
        assert terms == [float(index + 1)] * 15, (index, terms)  # each call saw its own features
    assert handle.pending_steps == 0


def test_data_parallel_wrapper_after_attach_runs_the_step() -> None:
    model, handle = _attached(weight=1.0)
    wrapped = nn.DataParallel(model)  # on CPU it calls the model itself; on GPUs, replicas in threads
    _, term = wrapped(torch.full((2, 2, 3, 3), 3.0))
    assert float(term.detach()) == 3.0 and handle.pending_steps == 0


def test_copies_carry_their_own_handle_and_no_step_state() -> None:
    model, handle = _attached()
    clone = copy.deepcopy(model)
    theirs = find_handle(clone)
    assert theirs is not None and theirs is not handle and theirs.model is clone
    assert theirs.criterion is clone.dense_contrast
    assert clone(torch.ones(1, 2, 2, 2))[1] > 0 and theirs.last_loss is not None
    restored = pickle.loads(pickle.dumps(model))
    assert find_handle(restored) is not None and find_handle(restored).pending_steps == 0


def test_find_handle_of_a_framework_ignores_the_handles_of_others() -> None:
    model, handle = _attached()

    class _Other(Framework):
        pass

    assert find_handle(model, _ToyFramework) is handle and find_handle(model, Framework) is handle
    assert find_handle(model, _Other) is None and find_handle(nn.Linear(1, 1), _ToyFramework) is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_the_default_criterion_follows_the_features_module(dtype: torch.dtype) -> None:
    layer = nn.Conv2d(4, 4, 1).to(dtype)
    crit = build_criterion(None, 4, None, None, where="x", like=layer)
    assert {p.dtype for p in crit.parameters()} == {dtype}


def test_a_float32_user_criterion_on_a_float64_model_gets_float32_features() -> None:
    crit = DenseContrastiveLoss(2, 0.1, in_channels=2)
    model, _handle = _attached(criterion=crit)
    model.double()  # converts the criterion too ...
    crit.float()  # ... which the user then keeps in float32
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, term = model(x)
    assert term.dtype == torch.float32 and torch.isfinite(term)
    term.backward()
    assert model.layer.weight.grad is not None and model.layer.weight.grad.dtype == torch.float64


def test_repr_names_the_model_and_its_state() -> None:
    _model, handle = _attached()
    assert repr(handle).startswith("DenseContrastHandle(_Toy, weight=2.0, layer=Conv2d")
    handle.remove()
    assert repr(handle).endswith("removed)")
