"""Tests of the criterion's optimizer state kept apart from a framework's parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densecontrast.adapters._checkpoint import STATE_KEY, keep_criterion_state


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model.add_module("dense_contrast", nn.Linear(2, 3))
    return model


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.1,
        momentum=0.9,
    )


def _step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    out = model.dense_contrast(model[1](model[0](torch.randn(5, 4))))
    out.square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def test_state_dict_holds_the_frameworks_groups_and_the_criterion_apart() -> None:
    model = _model()
    optimizer = _optimizer(model)
    assert keep_criterion_state(optimizer, model.dense_contrast, what="x") == 2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0, 1e-4, 0.0]
    _step(model, optimizer)
    state = optimizer.state_dict()
    plain = _optimizer(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
    assert [len(g["params"]) for g in state["param_groups"]] == [len(g["params"]) for g in plain.param_groups]
    assert len(state["state"]) == 4 and len(state[STATE_KEY]["state"]) == 2
    assert set(state[STATE_KEY]["criterion"]) == {"weight", "bias"}
    plain.load_state_dict(state)  # a framework without densecontrast reads it as its own


def test_load_restores_the_criterion_and_its_moments() -> None:
    model = _model()
    optimizer = _optimizer(model)
    keep_criterion_state(optimizer, model.dense_contrast, what="x")
    _step(model, optimizer)
    state = optimizer.state_dict()
    weight = model.dense_contrast.weight.detach().clone()
    buffer = optimizer.state[model.dense_contrast.weight]["momentum_buffer"].clone()

    fresh = _model()  # another projector (seeded alike, so perturb it)
    with torch.no_grad():
        fresh.dense_contrast.weight.add_(1.0)
    fresh_opt = _optimizer(fresh)
    keep_criterion_state(fresh_opt, fresh.dense_contrast, what="x")
    fresh_opt.load_state_dict(state)
    assert torch.equal(fresh.dense_contrast.weight, weight)
    assert torch.equal(fresh_opt.state[fresh.dense_contrast.weight]["momentum_buffer"], buffer)
    _step(fresh, fresh_opt)  # and it trains on


def test_a_state_without_the_criterion_starts_it_afresh_with_a_warning() -> None:
    plain_model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    plain = _optimizer(plain_model)
    plain_model(torch.randn(3, 4)).sum().backward()
    plain.step()
    model = _model()
    optimizer = _optimizer(model)
    keep_criterion_state(optimizer, model.dense_contrast, what="the checkpoint last.pt")
    with pytest.warns(RuntimeWarning, match="last.pt holds no state.*start afresh"):
        optimizer.load_state_dict(plain.state_dict())
    assert model.dense_contrast.weight not in optimizer.state
    _step(model, optimizer)


def test_a_state_with_the_criterion_inside_the_groups_is_refused_with_what_to_do() -> None:
    model = _model()
    old = _optimizer(model)  # the criterion's parameters mixed into the model's groups
    old.add_param_group({"params": [nn.Parameter(torch.zeros(1))]})
    optimizer = _optimizer(model)
    keep_criterion_state(optimizer, model.dense_contrast, what="x")
    with pytest.raises(ValueError, match=r"has 3 parameter groups; expected 2.*Start a new run"):
        optimizer.load_state_dict(old.state_dict())
