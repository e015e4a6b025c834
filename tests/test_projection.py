from __future__ import annotations

import types
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize, prune

from densecontrast import DenseContrastiveLoss, ProjectionHead, gather_pixels, sample_pixels


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


def _rois(dtype: torch.dtype, c: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4, c, 7, 7, generator=g).to(dtype)
    masks = torch.zeros(4, 7, 7, dtype=torch.bool)
    for i in range(4):
        masks[i, i % 3 : i % 3 + 4, 1:5] = True
    return feats, masks


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_the_loss_equals_calling_the_head_as_a_module(dtype: torch.dtype) -> None:
    """The loss's projection of a plain head gives the numbers of calling the head like any module."""
    torch.manual_seed(0)
    head = ProjectionHead(6, hidden_channels=5, out_channels=4).to(dtype)
    feats, masks = _rois(dtype)
    samples = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(1))
    fast = DenseContrastiveLoss(k=3, projector=head)(feats, masks, samples=samples)
    generic = DenseContrastiveLoss(k=3, projector=nn.Sequential(head))(feats, masks, samples=samples)
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(fast, generic, **tol)


# --- A projector behaves like any nn.Module: hooks, patched forwards, reparametrisations ------------------


def _shift_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + 1.0  # a shift, not a scale: cosine similarity ignores scales


def _shift_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0] + 0.5,)


def _halve_grad(module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
    return tuple(None if g is None else g * 0.5 for g in grad_input)


def _global_hook(module: nn.Module, args: tuple, output: object) -> object:
    return output - 1.0 if isinstance(module, ProjectionHead) else None  # type: ignore[operator]


class _Symmetric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.triu() + x.triu(1).transpose(0, 1)


class _TanhHead(ProjectionHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(x))


def _patched_forward(self: ProjectionHead, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(torch.sigmoid(self.fc1(x)))


def _reparametrised(case: str) -> ProjectionHead:
    """A head changed in one way that only ``nn.Module.__call__`` (or its parameters) can see."""
    head = (_TanhHead if case == "subclass_forward" else ProjectionHead)(6, hidden_channels=6, out_channels=4)
    if case == "forward_hook":
        head.register_forward_hook(_shift_output)
    elif case == "forward_pre_hook":
        head.register_forward_pre_hook(_shift_input)
    elif case == "layer_forward_hook":
        head.fc1.register_forward_hook(_shift_output)
    elif case == "full_backward_hook":
        head.register_full_backward_hook(_halve_grad)
    elif case == "patched_forward":
        head.forward = types.MethodType(_patched_forward, head)  # type: ignore[method-assign]
    elif case == "prune":
        prune.l1_unstructured(head.fc1, "weight", amount=0.4)
    elif case == "classic_weight_norm":
        torch.nn.utils.weight_norm(head.fc2)
    elif case == "classic_spectral_norm":
        torch.nn.utils.spectral_norm(head.fc1)
    elif case == "parametrize":
        parametrize.register_parametrization(head.fc1, "weight", _Symmetric())
    elif case == "parametrizations_weight_norm":
        parametrizations.weight_norm(head.fc1)
    return head


@pytest.fixture
def global_forward_hook() -> Iterator[None]:
    handle = nn.modules.module.register_module_forward_hook(_global_hook)
    yield
    handle.remove()


CASES = [
    "forward_hook",
    "forward_pre_hook",
    "layer_forward_hook",
    "full_backward_hook",
    "patched_forward",
    "subclass_forward",
    "prune",
    "classic_weight_norm",
    "classic_spectral_norm",
    "parametrize",
    "parametrizations_weight_norm",
    "global_forward_hook",
]


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")
@pytest.mark.parametrize("case", CASES)
def test_project_map_applies_what_calling_the_head_applies(case: str, request: pytest.FixtureRequest) -> None:
    if case == "global_forward_hook":
        request.getfixturevalue("global_forward_hook")
    torch.manual_seed(0)
    head = _reparametrised(case).double().eval()  # eval: spectral norm's power iteration stands still
    feats = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    expected = head(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(head.project_map(feats), expected, rtol=1e-12, atol=1e-12)


def _train(
    projector: nn.Module, feats: torch.Tensor, masks: torch.Tensor, steps: int = 2
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """SGD steps of the loss: the losses, feats' gradients, and the parameters at the end and at the start."""
    crit = DenseContrastiveLoss(k=3, tau=0.2, projector=projector)
    opt = torch.optim.SGD(crit.parameters(), lr=0.5)
    losses, grads = [], []
    initial = {name: p.detach().clone() for name, p in crit.named_parameters()}
    for step in range(steps):
        f = feats.clone().requires_grad_(True)
        samples = sample_pixels(masks, 3, generator=torch.Generator().manual_seed(step))
        loss = crit(f, masks, samples=samples)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
        grads.append(f.grad)
    params = {name: p.detach().clone() for name, p in crit.named_parameters()}
    return losses, grads, params, initial


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES)
def test_a_projector_behaves_like_any_module(
    case: str, dtype: torch.dtype, request: pytest.FixtureRequest
) -> None:
    """Each change trains for two steps exactly as when the head is called as a plain module."""
    if case == "global_forward_hook":
        request.getfixturevalue("global_forward_hook")
    torch.manual_seed(0)
    head = _reparametrised(case).to(dtype)
    torch.manual_seed(0)  # the same head again (hook-based reparametrisations cannot be deep-copied)
    generic = nn.Sequential(_reparametrised(case).to(dtype))  # Sequential calls the head through __call__
    feats, masks = _rois(dtype)
    ours, expected = _train(head, feats, masks), _train(generic, feats, masks)
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(ours[0], expected[0], **tol)  # the losses of both steps
    torch.testing.assert_close(ours[1], expected[1], **tol)  # feats' gradients
    assert len(ours[2]) == len(expected[2])
    for (name, a), b in zip(ours[2].items(), expected[2].values()):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")
    for name, p in ours[3].items():
        assert not torch.equal(p, ours[2][name]), f"{name} was not trained"


def test_wrong_channel_count() -> None:
    with pytest.raises(
        ValueError, match=r"x must have shape \(\.\.\., 8\) for in_channels=8; got \(2, 3, 5\)"
    ):
        ProjectionHead(8)(torch.randn(2, 3, 5))
