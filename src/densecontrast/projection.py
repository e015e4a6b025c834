"""Projection head of the learnable similarity.

Shapes: R RoIs, N pixels per RoI, C input channels, D projected channels, H x W RoI grid.

The paper's φ is two fully connected layers; the released code applies the same thing as two 1x1
convolutions over the whole map. Because φ acts on each pixel alone, projecting only the sampled pixels
gives the same loss for a fraction of the work.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

from ._validation import check_ndim, check_positive_int, check_tensor


def _has_hooks(module: nn.Module) -> bool:
    """Whether ``module(...)`` would run any hook: the condition ``nn.Module.__call__`` itself tests."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def _is_plain(module: nn.Module, cls: type[nn.Module]) -> bool:
    """Whether calling ``module`` runs ``cls.forward`` on its own parameters and nothing else.

    Not when the type is a subclass, ``forward`` is patched on the instance, a hook is registered (this
    covers ``torch.nn.utils.prune`` and the hook-based ``weight_norm`` / ``spectral_norm``), or a tensor
    is reparametrised (``torch.nn.utils.parametrize``; pruning's and the hook-based norms' ``*_orig``
    parameters also count).
    """
    return (
        type(module) is cls
        and "forward" not in module.__dict__
        and not _has_hooks(module)
        and not parametrize.is_parametrized(module)
        and not any(name.endswith("_orig") for name in module._parameters)
    )


def _is_plain_head(projector: nn.Module) -> bool:
    """Whether ``projector`` is a :class:`ProjectionHead` whose call the loss may replace by
    :meth:`ProjectionHead._forward_channels_first` without changing anything the user could observe."""
    return (
        _is_plain(projector, ProjectionHead)
        and _is_plain(projector.fc1, nn.Linear)  # type: ignore[arg-type]
        and _is_plain(projector.fc2, nn.Linear)  # type: ignore[arg-type]
    )


class ProjectionHead(nn.Module):
    """Two fully connected layers with a ReLU between, acting on the last dimension.

    Args:
        in_channels: C, the channels of the features.
        hidden_channels: width of the hidden layer; defaults to ``in_channels``.
        out_channels: D, the projected dimension.

    Shape:
        - Input: (..., C)
        - Output: (..., D)

    Examples:
        >>> import torch
        >>> head = ProjectionHead(16, out_channels=8)
        >>> head(torch.randn(4, 96, 16)).shape
        torch.Size([4, 96, 8])
    """

    def __init__(self, in_channels: int, hidden_channels: int | None = None, out_channels: int = 256) -> None:
        super().__init__()
        in_channels = check_positive_int("in_channels", in_channels)
        hidden = (
            in_channels if hidden_channels is None else check_positive_int("hidden_channels", hidden_channels)
        )
        out_channels = check_positive_int("out_channels", out_channels)
        self.in_channels = in_channels
        self.hidden_channels = hidden
        self.out_channels = out_channels
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"x must have shape (..., {self.in_channels}) for in_channels={self.in_channels}; "
                f"got {tuple(x.shape)}"
            )
        # In place: fc1's backward does not need its output, and it saves a buffer of the size of x.
        return self.fc2(F.relu(self.fc1(x), inplace=True))

    def _forward_channels_first(self, x: Tensor) -> Tensor:
        """The head on channels-first rows (R, C, N) -> (R, D, N), as two 1x1 convolutions.

        The same numbers as :meth:`forward` on ``x.transpose(1, 2)``; the loss uses it on its gathered
        rows because one convolution's backward returns the input, weight and bias gradients at once.
        It bypasses ``nn.Module.__call__``, so the loss uses it only where :func:`_is_plain_head` holds.
        """
        hidden = F.conv1d(x, self.fc1.weight[:, :, None], self.fc1.bias)
        return F.conv1d(F.relu(hidden, inplace=True), self.fc2.weight[:, :, None], self.fc2.bias)

    def project_map(self, feats: Tensor) -> Tensor:
        """Apply the head to every pixel of a map, as the released code's two 1x1 convolutions do.

        A head with hooks, a patched ``forward`` or reparametrised layers is called as a module on the
        channels-last view instead, so that all of them apply here too.

        Args:
            feats: float tensor (R, C, H, W).

        Returns:
            float tensor (R, D, H, W).
        """
        feats = check_tensor("feats", feats)
        check_ndim("feats", feats, 4, "(R, C, H, W)")
        if not _is_plain_head(self):
            out: Tensor = self(feats.movedim(1, -1))
            return out.movedim(-1, 1)
        w1 = self.fc1.weight[:, :, None, None]
        w2 = self.fc2.weight[:, :, None, None]
        return F.conv2d(F.relu(F.conv2d(feats, w1, self.fc1.bias)), w2, self.fc2.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.hidden_channels} -> {self.out_channels}"
