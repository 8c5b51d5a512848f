"""Reading a module without changing it: eval mode restored, hooks always removed,
forward passes stopped once every target has run."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from ..errors import FeatvisError, user_code


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (dropout off, BatchNorm running statistics), every submodule's
    mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class _Stop(Exception):
    """Raised by a hook once every target has run: the rest of the forward is not needed."""


@contextlib.contextmanager
def capture(targets: Mapping[str, nn.Module], *,
            reduce: Callable[[str, torch.Tensor], object] | None = None, at: str = "output"
            ) -> Iterator[dict[str, object]]:
    """Hooks on ``targets`` (name -> module) only, always removed on exit; yields the dict
    that each forward fills with copies of their outputs (``at="input"``: of their one
    input, caught before the module runs), or with ``reduce(name, tensor)`` computed inside
    the hook (new tensors, so no copy is needed either way: a later in-place op cannot
    change them). The forward pass ends (by :class:`_Stop`, which :func:`run_forward`
    catches) once all have been read."""
    captured: dict[str, object] = {}

    def read(name: str, value: object, what: str) -> None:
        if name in captured:
            raise FeatvisError(f"layer {name!r} runs twice in one forward pass; featvis "
                               "reads one output per layer (pick a module that runs once)")
        if not isinstance(value, torch.Tensor):
            raise FeatvisError(f"layer {name!r} {what} {type(value).__name__}, not one tensor")
        captured[name] = value.clone() if reduce is None else reduce(name, value)
        if len(captured) == len(targets):
            raise _Stop

    def hook_for(name: str):
        if at == "input":
            return lambda module, args: read(name, args[0] if len(args) == 1 else args,
                                             "takes")
        return lambda module, args, output: read(name, output, "returns")

    handles = []
    try:
        for name, module in targets.items():
            register = (module.register_forward_pre_hook if at == "input"
                        else module.register_forward_hook)
            handles.append(register(hook_for(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


Forward = Callable[[nn.Module, torch.Tensor], object]   # how a model takes a batch


def call(model: nn.Module, x: torch.Tensor) -> object:
    """The forward pass of a model that takes one tensor: ``model(x)``."""
    return model(x)


def run_forward(model: nn.Module, x: torch.Tensor, targets: Mapping[str, nn.Module],
                reduce: Callable[[str, torch.Tensor], object] | None = None, *,
                at: str = "output", forward: Forward = call) -> dict:
    """The outputs (or inputs, see :func:`capture`) of ``targets`` for input ``x``, or their
    ``reduce``, from one (truncated) forward pass ``forward(model, x)``."""
    with capture(targets, reduce=reduce, at=at) as captured, \
            user_code(f"the model's forward pass on inputs of shape {tuple(x.shape)}"):
        try:
            forward(model, x)
        except _Stop:
            pass
    missing = [name for name in targets if name not in captured]
    if missing:
        raise FeatvisError(f"layer {missing[0]!r} never ran in the model's forward pass")
    return captured
