"""Projection head of the learnable similarity.

Shapes: R RoIs, N pixels per RoI, C input channels, D projected channels, H x W RoI grid.

The paper's φ is two fully connected layers; the released code applies the same thing as two 1x1
convolutions over the whole map. Because φ acts on each pixel alone, projecting only the sampled pixels
gives the same loss for a fraction of the work.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_ndim, check_positive_int, check_tensor


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
        """
        hidden = F.conv1d(x, self.fc1.weight[:, :, None], self.fc1.bias)
        return F.conv1d(F.relu(hidden, inplace=True), self.fc2.weight[:, :, None], self.fc2.bias)

    def project_map(self, feats: Tensor) -> Tensor:
        """Apply the head to every pixel of a map, as the released code's two 1x1 convolutions do.

        Args:
            feats: float tensor (R, C, H, W).

        Returns:
            float tensor (R, D, H, W).
        """
        feats = check_tensor("feats", feats)
        check_ndim("feats", feats, 4, "(R, C, H, W)")
        w1 = self.fc1.weight[:, :, None, None]
        w2 = self.fc2.weight[:, :, None, None]
        return F.conv2d(F.relu(F.conv2d(feats, w1, self.fc1.bias)), w2, self.fc2.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.hidden_channels} -> {self.out_channels}"
