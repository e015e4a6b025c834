"""The criterion's training state in a framework's checkpoint, outside the inference weights.

A framework's trainer (Ultralytics') builds one optimizer over the whole attached model, so the
projection head's parameters sit in its parameter groups, and its checkpoints hold the optimizer's
state while the inference weights (an EMA copy) hold no projector. Saving and resuming such a run needs
the projector's weights and moments to travel with the optimizer's state, and a plain framework (without
densecontrast) to read that state as if the loss had never been attached.

:func:`keep_criterion_state` does both on a torch optimizer: it moves the criterion's parameters into
trailing parameter groups of their own, and registers optimizer hooks so that ``state_dict()`` returns
the framework's groups only, with the criterion's groups, their state and the criterion's own
``state_dict`` under the key :data:`STATE_KEY`; ``load_state_dict()`` puts them back (or starts them
afresh, with a warning, when the state holds none).

This module is private and imports torch only.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn
from torch.optim import Optimizer

STATE_KEY = "densecontrast"
"""The key of the criterion's state inside the optimizer's ``state_dict``."""


def keep_criterion_state(optimizer: Optimizer, criterion: nn.Module, *, what: str) -> int:
    """Give the criterion's parameters groups of their own and keep their state beside the others.

    Each group holding criterion parameters gives them up to a new trailing group with the same
    hyperparameters, so the framework's groups keep their number and order.

    Args:
        optimizer: the framework's optimizer over the attached model.
        criterion: the loss module (``model.dense_contrast``).
        what: how the run is resumed, for the warning when a state without the criterion's is loaded.

    Returns:
        The number of trailing groups (0 when the criterion has no parameter in the optimizer).
    """
    ids = {id(p) for p in criterion.parameters()}
    moved = []
    for group in optimizer.param_groups:
        mine = [p for p in group["params"] if id(p) in ids]
        if mine:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
            moved.append({**{k: v for k, v in group.items() if k != "params"}, "params": mine})
    for group in moved:
        optimizer.add_param_group(group)
    count = len(moved)
    if count:
        optimizer.register_state_dict_post_hook(_SaveHook(criterion, count))
        optimizer.register_load_state_dict_pre_hook(_LoadHook(criterion, count, what))
    return count


class _SaveHook:
    def __init__(self, criterion: nn.Module, count: int) -> None:
        self.criterion, self.count = criterion, count

    def __call__(self, optimizer: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        groups = state["param_groups"]
        theirs, mine = groups[: -self.count], groups[-self.count :]
        ids = {i for g in mine for i in g["params"]}
        return {
            **state,
            "state": {i: s for i, s in state["state"].items() if i not in ids},
            "param_groups": theirs,
            STATE_KEY: {
                "param_groups": mine,
                "state": {i: s for i, s in state["state"].items() if i in ids},
                "criterion": self.criterion.state_dict(),
            },
        }


class _LoadHook:
    def __init__(self, criterion: nn.Module, count: int, what: str) -> None:
        self.criterion, self.count, self.what = criterion, count, what

    def __call__(self, optimizer: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        groups = list(state["param_groups"])
        expected = len(optimizer.param_groups) - self.count
        if len(groups) != expected:
            raise ValueError(
                f"densecontrast: the optimizer state to load has {len(groups)} parameter groups; expected "
                f"{expected} (the model's) plus the dense contrastive loss's kept apart. It was saved by an "
                "older densecontrast that kept the projection head in the model's groups, so its moments "
                "cannot be restored. Start a new run from its weights instead of resuming"
            )
        offset = 1 + max((i for g in groups for i in g["params"]), default=-1)
        saved = state.get(STATE_KEY)
        if saved is None:
            warnings.warn(
                f"densecontrast: {self.what} holds no state of the dense contrastive loss (a run trained "
                "without it); its projection head and optimizer moments start afresh",
                RuntimeWarning,
                stacklevel=3,
            )
            saved_groups, start = [], offset
            for group in optimizer.param_groups[expected:]:
                size = len(group["params"])
                hyper = {k: v for k, v in group.items() if k != "params"}
                saved_groups.append({**hyper, "params": list(range(start, start + size))})
                start += size
            saved_state: dict[int, Any] = {}
        else:
            self.criterion.load_state_dict(saved["criterion"])
            old = [i for g in saved["param_groups"] for i in g["params"]]
            remap = {i: offset + n for n, i in enumerate(old)}
            saved_groups = [{**g, "params": [remap[i] for i in g["params"]]} for g in saved["param_groups"]]
            saved_state = {remap[i]: s for i, s in saved["state"].items()}
        return {
            **{k: v for k, v in state.items() if k != STATE_KEY},
            "param_groups": groups + saved_groups,
            "state": {**state["state"], **saved_state},
        }
