"""Tests of densecontrast.taps.FeatureTap."""

from __future__ import annotations

import weakref

import pytest
import torch
from _helpers import is_released
from torch import nn

from densecontrast.taps import FeatureTap, resolve_module


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True))
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture
def net() -> _Net:
    torch.manual_seed(0)
    return _Net()


def test_output_capture_equals_module_output(net: _Net) -> None:
    x = torch.randn(5, 4)
    tap = FeatureTap(net.body, what="output")
    out = net(x)
    hidden = tap.pop()
    assert torch.equal(hidden, torch.relu(net.body[0](x)))
    assert torch.equal(net.head(hidden), out)
    tap.remove()


def test_input_capture_by_dotted_name(net: _Net) -> None:
    x = torch.randn(5, 4)
    tap = FeatureTap.on(net, "body.0", what="input")
    net(x)
    assert tap.captured
    assert tap.peek() is x and tap.captured  # peek keeps the value
    assert tap.pop() is x
    assert not tap.captured and tap.peek() is None
    tap.remove()


@pytest.mark.parametrize("what", ["args", "inputs"])
def test_args_capture_keeps_all_positional_args(what: str) -> None:
    bil = nn.Bilinear(2, 3, 4)
    a, b = torch.randn(7, 2), torch.randn(7, 3)
    with FeatureTap(bil, what=what) as tap:  # type: ignore[arg-type]
        bil(a, b)
        got = tap.pop()
    assert isinstance(got, tuple) and got[0] is a and got[1] is b
    assert tap.what == "args"  # "inputs" is another name for "args"


def test_captures_are_references_that_inplace_modules_change(net: _Net) -> None:
    # body.1 is an in-place ReLU: the tap of its input holds the very tensor that the ReLU then
    # overwrites, so it reads post-ReLU values; the input of the next module names what it holds.
    x = torch.randn(16, 4)
    relu_in = FeatureTap.on(net, "body.1", what="input")
    head_in = FeatureTap.on(net, "head", what="input")
    net(x)
    a, b = relu_in.pop(), head_in.pop()
    assert a is b
    assert torch.equal(b, torch.relu(net.body[0](x))) and (net.body[0](x) < 0).any()
    relu_in.remove()
    head_in.remove()


def test_pop_returns_latest_and_clears(net: _Net) -> None:
    tap = FeatureTap.on(net, net.head)
    net(torch.randn(2, 4))
    second = net(torch.randn(3, 4))
    got = tap.pop()
    assert torch.equal(got, second)
    assert not tap.captured
    assert tap.pop() is None
    tap.remove()


def test_pop_releases_the_graph(net: _Net) -> None:
    tap = FeatureTap.on(net, "head")
    net(torch.randn(2, 4, requires_grad=True))
    out = tap.pop()
    assert out.grad_fn is not None
    ref = weakref.ref(out)
    del out
    assert is_released(ref)  # the tap kept no reference to the step's graph
    tap.remove()


def test_training_only(net: _Net) -> None:
    tap = FeatureTap.on(net, "head", training_only=True)
    net.eval()
    net(torch.randn(2, 4))
    assert not tap.captured and tap.pop() is None
    net.train()
    net(torch.randn(2, 4))
    assert tap.captured
    tap.remove()


def test_output_unchanged_and_no_grad_effect(net: _Net) -> None:
    x = torch.randn(5, 4)
    ref = net(x)
    with FeatureTap.on(net, "body", what="output"), FeatureTap.on(net, "head", what="input"):
        out = net(x)
    assert torch.equal(out, ref)


def test_remove_and_context_manager(net: _Net) -> None:
    tap = FeatureTap.on(net, "head")
    net(torch.randn(1, 4))
    tap.remove()
    assert not tap.active and not tap.captured
    net(torch.randn(1, 4))
    assert not tap.captured and tap.pop() is None  # the hook is gone: nothing is captured any more
    tap.remove()  # idempotent
    with FeatureTap.on(net, "body.0", what="input") as tap2:
        assert tap2.active
        net(torch.randn(1, 4))
        assert tap2.captured
        tap2.clear()
    assert not tap2.active
    net(torch.randn(1, 4))
    assert not tap2.captured


def test_context_manager_removes_on_exception(net: _Net) -> None:
    with pytest.raises(RuntimeError, match="boom"), FeatureTap.on(net, "head") as tap:
        net(torch.randn(1, 4))
        raise RuntimeError("boom")
    assert not tap.active
    net(torch.randn(1, 4))
    assert not tap.captured


def test_unknown_name_lists_close_matches(net: _Net) -> None:
    with pytest.raises(ValueError, match=r"no submodule named 'body\.00'.*'body\.0'"):
        FeatureTap.on(net, "body.00")
    with pytest.raises(ValueError, match="no submodule named 'zzz'"):
        FeatureTap.on(net, "zzz")


def test_foreign_module_object_is_refused(net: _Net) -> None:
    with pytest.raises(ValueError, match="not a submodule"):
        FeatureTap.on(net, nn.Linear(1, 1))


def test_bad_arguments(net: _Net) -> None:
    with pytest.raises(ValueError, match="what must be one of"):
        FeatureTap(net.head, what="grad")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module"):
        FeatureTap("head")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="training_only must be a bool"):
        FeatureTap(net.head, training_only=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="target must be a dotted module name"):
        FeatureTap.on(net, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        FeatureTap.on(object(), "head")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_script_module_is_refused(net: _Net) -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="ScriptModule"):
        FeatureTap.on(scripted, "0")
    with pytest.raises(TypeError, match="ScriptModule"):
        FeatureTap(scripted)


def test_resolve_module_root_and_nested(net: _Net) -> None:
    assert resolve_module(net, "") is net
    assert resolve_module(net, "body.1") is net.body[1]
    assert resolve_module(net, net.head) is net.head


class _KeywordOnly(nn.Module):
    def forward(
        self, *, scale: float = 2.0, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return x * scale if bias is None else x * scale + bias


def test_input_of_a_call_with_keyword_arguments_only() -> None:
    """The first positional argument, else the first tensor keyword argument: never a capture of None."""
    lin = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    with FeatureTap(lin, what="input") as tap:
        lin(input=x)
        assert tap.captured and tap.pop() is x
    mod, y, b = _KeywordOnly(), torch.randn(3), torch.randn(3)
    with FeatureTap(mod, what="input") as tap:
        mod(scale=3.0, x=y, bias=b)  # the first tensor keyword, whatever comes before it
        assert tap.pop() is y
        mod(bias=b, x=y)
        assert tap.pop() is b
    with FeatureTap(lin, what="args") as tap:
        lin(input=x)
        assert tap.captured and tap.pop() == ()  # "args" holds the positional arguments only


def test_input_of_a_call_without_any_tensor_names_the_module() -> None:
    class NoTensor(nn.Module):
        def forward(self, *, n: int = 3) -> torch.Tensor:
            return torch.zeros(n)

    mod = NoTensor()
    with FeatureTap(mod, what="input") as tap:
        with pytest.raises(
            ValueError, match=r"what='input'\) on NoTensor: .*no tensor keyword.*'n'.*what='output'"
        ):
            mod(n=2)
        assert not tap.captured and tap.pop() is None


def test_repr(net: _Net) -> None:
    tap = FeatureTap.on(net, "head", what="input")
    assert "Linear" in repr(tap) and "active" in repr(tap)
    tap.remove()
    assert "removed" in repr(tap)
