from __future__ import annotations

import pytest
import torch
from torch import nn

from densecontrast import ProjectionHead, gather_pixels


def released_projection(head: ProjectionHead) -> nn.Sequential:
    """The released code's form: two 1x1 convolutions with a ReLU, carrying the head's weights."""
    conv1 = nn.Conv2d(head.in_channels, head.hidden_channels, 1)
    conv2 = nn.Conv2d(head.hidden_channels, head.out_channels, 1)
    with torch.no_grad():
        conv1.weight.copy_(head.fc1.weight[:, :, None, None])
        conv1.bias.copy_(head.fc1.bias)
        conv2.weight.copy_(head.fc2.weight[:, :, None, None])
        conv2.bias.copy_(head.fc2.bias)
    return nn.Sequential(conv1, nn.ReLU(), conv2).double()


def test_projecting_samples_equals_projecting_the_map() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(6, hidden_channels=5, out_channels=4).double()
    feats = torch.randn(3, 6, 7, 7, dtype=torch.float64)
    index = torch.randint(49, (3, 12))
    sampled_then_projected = head(gather_pixels(feats, index))
    projected_map = released_projection(head)(feats)
    projected_then_sampled = gather_pixels(projected_map, index)
    torch.testing.assert_close(sampled_then_projected, projected_then_sampled, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(head.project_map(feats), projected_map, rtol=1e-12, atol=1e-12)


def test_defaults() -> None:
    head = ProjectionHead(32)
    assert (head.in_channels, head.hidden_channels, head.out_channels) == (32, 32, 256)
    assert head.fc1.weight.shape == (32, 32) and head.fc2.weight.shape == (256, 32)
    assert "32 -> 32 -> 256" in repr(head)


def test_relu_between_layers() -> None:
    head = ProjectionHead(1, hidden_channels=1, out_channels=1)
    with torch.no_grad():
        head.fc1.weight.fill_(1.0)
        head.fc1.bias.zero_()
        head.fc2.weight.fill_(1.0)
        head.fc2.bias.zero_()
    assert head(torch.tensor([[-3.0], [2.0]])).flatten().tolist() == [0.0, 2.0]


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0,), ValueError, "in_channels must be a positive int; got 0"),
        ((4, 0), ValueError, "hidden_channels must be a positive int; got 0"),
        ((4, None, -1), ValueError, "out_channels must be a positive int; got -1"),
        ((4.0,), TypeError, r"in_channels must be a positive int; got 4\.0 \(float\)"),
    ],
)
def test_bad_arguments(args: tuple, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ProjectionHead(*args)


def test_channels_first_path_equals_forward() -> None:
    """The loss's channels-first (R, C, N) path gives the same numbers as forward on the rows."""
    torch.manual_seed(0)
    head = ProjectionHead(6, hidden_channels=5, out_channels=4).double()
    rows = torch.randn(3, 7, 6, dtype=torch.float64)
    channels_first = head._forward_channels_first(rows.transpose(1, 2).contiguous())  # (R, D, N)
    torch.testing.assert_close(channels_first.transpose(1, 2), head(rows), rtol=1e-12, atol=1e-12)


def test_wrong_channel_count() -> None:
    with pytest.raises(
        ValueError, match=r"x must have shape \(\.\.\., 8\) for in_channels=8; got \(2, 3, 5\)"
    ):
        ProjectionHead(8)(torch.randn(2, 3, 5))
