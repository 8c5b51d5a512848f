"""Deconvnet and guided backpropagation: each channel's top examples projected to pixels.

Zeiler & Fergus (2014) send one unit's maximum back down a CNN: every other activation of
the layer is zeroed, the value at the maximum's position is kept, linear ops pass it down
through their transposes, max pools through the switches of the forward pass, and each ReLU
through a rectification: of the backward signal (``"deconvnet"``), or of the backward signal
where the ReLU's forward input was positive (``"guided"``, Springenberg et al. 2015). Autograd
already does all of this but the ReLUs; those are swapped for the rule by a
:class:`~torch.overrides.TorchFunctionMode` active only during featvis's own forward passes,
so ``nn.ReLU`` modules, ``F.relu``/``torch.relu`` calls, in-place ReLUs and one module used
twice all work, and the model is never touched (no hooks left, no modules replaced, no
``.grad``). Every other non-linearity before the layer (GELU, SiLU, hard-swish, sigmoid,
softmax ...) passes the signal by its own gradient, as captum's ``GuidedBackprop`` does, and
the result names the ones it met (the gallery says so on the layer's page).

A position's receptive field is the bounding box of the input it depends on in the
linearized network (ReLUs as identities, max pools as average pools of the same geometry,
every parameter 1 so no weights cancel), found by autograd on a copy of the model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..data.stream import Data, input_shape, take
from ..data.tensors import check_inputs
from ..errors import DataError
from ..params import POSITIVE, Options, Param, validated
from ..seam import Key, Probe, UnsupportedError, affine, probe
from ..seam.hooks import Forward, call, eval_mode, run_forward
from ..units import Units
from .examples import K, TopExamples, top_examples
from .registry import SANITY, Method, Page

__all__ = ["Projections", "deconvnet", "RULES"]

RULES = ("deconvnet", "guided")

# Names (without leading/trailing underscores) of the non-linearities that pass the signal by
# their own gradient: elementwise ones (an identity in the receptive-field computation), and
# those that mix their inputs.
_ELEMENTWISE = frozenset({
    "sigmoid", "special_expit", "tanh", "gelu", "silu", "mish", "elu", "selu", "celu",
    "leaky_relu", "prelu", "rrelu", "softplus", "hardtanh", "relu6", "hardswish",
    "hardsigmoid", "log_sigmoid", "softsign", "tanhshrink", "softshrink", "hardshrink",
    "threshold"})
_MIXING = frozenset({"softmax", "log_softmax", "softmin", "glu"})
_MAX_POOLS = frozenset({f"{kind}max_pool{n}d" for kind in ("", "adaptive_") for n in (1, 2, 3)})


@dataclass
class Projections:
    """Per unit of ``units (U,)``: its top-k inputs ``indices (U, k)``, the ``positions
    (U, k, 2)`` (row, column in the layer's map) of their maxima, ``projections (U, k, C, H,
    W)`` each maximum sent back to pixel space, ``boxes (U, k, 4)`` the top, left, bottom and
    right (exclusive) of its receptive field clipped to the image, and ``crops (U, k, C, h,
    w)`` the input under the whole field, zero where the field leaves the image. ``passed``:
    the non-linearities other than ReLU met on the way, which passed the signal by their own
    gradient (sorted names, e.g. ``("gelu",)``)."""

    indices: torch.Tensor
    positions: torch.Tensor
    projections: torch.Tensor
    boxes: torch.Tensor
    crops: torch.Tensor
    units: torch.Tensor
    passed: tuple[str, ...] = ()


class _ReLURule(torch.autograd.Function):
    """A ReLU (an identity for ``"linear"``) whose backward pass follows ``rule``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str) -> torch.Tensor:
        ctx.rule = rule
        if rule == "guided":
            ctx.save_for_backward(x > 0)
        return x.clone() if rule == "linear" else torch.relu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        if ctx.rule == "linear":              # the support only: keeps values in range
            return (grad != 0).to(grad.dtype), None
        grad = grad.clamp(min=0)
        if ctx.rule == "guided":
            grad = grad * ctx.saved_tensors[0]
        return grad, None


def _max_pool_args(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                   return_indices=False):
    """A max pool's arguments by name (``F.max_poolNd`` and ``torch.max_poolNd`` order)."""
    return input, kernel_size, stride, padding, dilation, ceil_mode


def _adaptive_args(input, output_size, return_indices=False):
    """An adaptive max pool's arguments by name."""
    return input, output_size


def _averaged(name: str, args: tuple, kwargs: dict) -> torch.Tensor:
    """The average pool with the windows of the max pool ``name`` called with ``args``."""
    average = getattr(F, name.replace("max", "avg"))
    if name.startswith("adaptive"):
        return average(*_adaptive_args(*args, **kwargs))
    x, kernel_size, stride, padding, dilation, ceil_mode = _max_pool_args(*args, **kwargs)
    if set(dilation if isinstance(dilation, Sequence) else [dilation]) != {1}:
        raise UnsupportedError(f"{name} with dilation {dilation}: its receptive field has no "
                               "average-pool equivalent")
    return average(x, kernel_size, stride, padding, ceil_mode)


class _Rules(TorchFunctionMode):
    """While active: relu/relu_ calls follow ``rule`` (out of place, the result copied back
    for an in-place call); other non-linearities run as usual and are recorded in
    ``passed``; for ``"linear"`` elementwise ones are identities and max pools become average
    pools. Everything else runs as usual."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule
        self.passed: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        base = name.strip("_")
        if base == "relu":
            x = args[0] if args else kwargs["input"]
            out = _ReLURule.apply(x, self.rule)
            return x.copy_(out) if name.endswith("_") or kwargs.get("inplace") else out
        if base in _ELEMENTWISE or base in _MIXING:
            self.passed.add(base)
            if self.rule == "linear" and base in _ELEMENTWISE:
                x = args[0] if args else kwargs["input"]
                out = _ReLURule.apply(x, "linear")
                return x.copy_(out) if name.endswith("_") or kwargs.get("inplace") else out
        pool = name.removesuffix("_with_indices")
        if self.rule == "linear" and pool in _MAX_POOLS:
            out = _averaged(pool, args, kwargs)
            return (out, func(*args, **kwargs)[1]) if pool != name else out
        return func(*args, **kwargs)


def _extent(seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last ``True`` of each row of ``seen (N, L)``."""
    return seen.int().argmax(1), seen.shape[1] - seen.flip(1).int().argmax(1)


def _fields(model: nn.Module, layer: str, map_shape: tuple[int, ...],
            input_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
            batch_size: int, forward: Forward
            ) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """``(top, bottom)`` per row of the layer's map and ``(left, right)`` per column: the input
    rows (columns) that row (column) depends on in the linearized copy, clipped to the image.
    A field's rows depend on its row only, its columns on its column, as in any stack of
    convolutions and pools."""
    linear = copy.deepcopy(model).eval()
    with torch.no_grad():
        for parameter in linear.parameters():
            parameter.requires_grad_(False).fill_(1)
    target = {layer: linear.get_submodule(layer)}
    _, height, width = map_shape
    rows_seen, cols_seen = [], []
    for lines in torch.arange(height + width, device=device).split(batch_size):
        x = torch.zeros(len(lines), *input_shape, device=device, dtype=dtype,
                        requires_grad=True)
        with torch.enable_grad(), _Rules("linear"):
            out = run_forward(linear, x, target, forward=forward)[layer]
        row = lines[:, None] == torch.arange(height, device=device)
        col = lines[:, None] - height == torch.arange(width, device=device)
        signal = (row[:, None, :, None] | col[:, None, None, :]).to(dtype).expand_as(out)
        seen = torch.autograd.grad(out, x, signal)[0] != 0
        rows_seen.append(seen.any(3).any(1))
        cols_seen.append(seen.any(2).any(1))
    return _extent(torch.cat(rows_seen)[:height]), _extent(torch.cat(cols_seen)[height:])


def _project(model: nn.Module, layer: str, x: torch.Tensor, units: torch.Tensor,
             positions: torch.Tensor, rule: str, forward: Forward
             ) -> tuple[torch.Tensor, set[str]]:
    """``(B, *input)``: row ``b``'s value of unit ``units[b]`` at ``positions[b]``, all else
    zeroed, sent back to the input of ``x[b]`` by ``rule``; and the non-linearities other
    than ReLU that passed it by their own gradient."""
    x = x.detach().requires_grad_()
    module = model.get_submodule(layer)
    direct = _plain_conv(module)
    with torch.enable_grad(), eval_mode(model), _Rules(rule) as rules:
        out = run_forward(model, x, {layer: module}, at="input" if direct else "output",
                          forward=forward)[layer]
    if direct:
        # The layer's own transpose, for one position and channel per row: the unit's
        # filter times its value, placed at the position (no full forward or backward).
        return torch.autograd.grad(out, x, _placed_filters(module, out.detach(), units,
                                                           positions))[0], rules.passed
    at = (torch.arange(len(x), device=x.device), units, positions[:, 0], positions[:, 1])
    signal = torch.zeros_like(out)
    signal[at] = out.detach()[at]
    return torch.autograd.grad(out, x, signal)[0], rules.passed


def _plain_conv(module: nn.Module) -> bool:
    """A Conv2d whose adjoint :func:`_placed_filters` computes: no hooks or subclass, one
    group, zero padding given in pixels."""
    return (affine(module) and isinstance(module, nn.Conv2d) and module.groups == 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def _placed_filters(conv: nn.Conv2d, inputs: torch.Tensor, units: torch.Tensor,
                    positions: torch.Tensor) -> torch.Tensor:
    """``(B, C_in, H, W)``: for row b, ``conv``'s output at channel ``units[b]`` and position
    ``positions[b]`` times its gradient with respect to the layer's input ``inputs``: the
    unit's filter, scaled by that output, placed on the window it reads (one window per row
    is gathered, not every position's)."""
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    (ph, pw), (dh, dw) = conv.padding, conv.dilation
    height, width = inputs.shape[2:]
    padded = F.pad(inputs, (pw, pw, ph, ph)).permute(0, 2, 3, 1)        # (B, H', W', C)
    device = inputs.device
    rows = (positions[:, :1] * sh + torch.arange(kh, device=device) * dh)[:, :, None]
    cols = (positions[:, 1:] * sw + torch.arange(kw, device=device) * dw)[:, None, :]
    batch = torch.arange(len(inputs), device=device)[:, None, None]
    filters = conv.weight.detach()[units].permute(0, 2, 3, 1)          # (B, kh, kw, C)
    value = (padded[batch, rows, cols] * filters).flatten(1).sum(1)
    if conv.bias is not None:
        value = value + conv.bias.detach()[units]
    placed = torch.zeros_like(padded)
    placed[batch, rows, cols] = value[:, None, None, None] * filters
    return placed.permute(0, 3, 1, 2)[:, :, ph:ph + height, pw:pw + width]


def _crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int,
          width: int) -> torch.Tensor:
    """``(B, C, height, width)``: the windows of ``x (B, C, H, W)`` from ``(top, left)``, zero
    where they leave the image."""
    rows = top[:, None] + torch.arange(height, device=x.device)
    cols = left[:, None] + torch.arange(width, device=x.device)
    inside = (((rows >= 0) & (rows < x.shape[2]))[:, :, None]
              & ((cols >= 0) & (cols < x.shape[3]))[:, None, :])
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    picked = x[batch, :, rows.clamp(0, x.shape[2] - 1)[:, :, None],
               cols.clamp(0, x.shape[3] - 1)[:, None, :]]            # (B, height, width, C)
    return torch.where(inside[:, None], picked.permute(0, 3, 1, 2), 0)


@validated(rule=Options(RULES), batch_size=POSITIVE)
def deconvnet(model: nn.Module | Probe, images: Data, layer: Key, units: Units = None,
              k: int = 9, rule: str = "deconvnet", batch_size: int = 64, *,
              examples: TopExamples | None = None) -> Projections:
    """Each unit's ``k`` top examples (see :func:`top_examples`) projected to pixel space.

    ``layer`` must output ``(N, C, H, W)``; its units are channels. ``rule`` is
    ``"deconvnet"`` (Zeiler & Fergus 2014) or ``"guided"`` (guided backpropagation), applied
    at every ReLU; every other non-linearity before the layer passes the signal by its own
    gradient (as captum's ``GuidedBackprop``), and ``passed`` names them.
    ``batch_size`` inputs go through the model at once, for mining and for projection.
    ``examples``, the layer's :func:`top_examples` of these ``images`` already mined (with
    positions), are projected instead of mining again (their units and k are used).

    Example:
        >>> p = deconvnet(cnn, images, "features.3", k=9)       # doctest: +SKIP
        >>> p.projections.shape, p.crops.shape                  # (C, 9, 1, 28, 28), ...
    """
    if isinstance(images, torch.Tensor):
        images = check_inputs(images)
    shape = input_shape(images)
    if len(shape) != 3:
        raise DataError(f"images: expected pictures (N, C, H, W), got one input of shape "
                        f"{shape}")
    seam = probe(model, shape)
    info = seam.layer(layer)
    if len(info.output_shape) != 3:
        raise UnsupportedError(f"layer {layer!r} outputs shape {info.output_shape} per input; "
                               "deconvnet projects channels of a 4-D (N, C, H, W) output")
    device, dtype = seam.device, seam.dtype
    forward = seam.forward or call
    (top, bottom), (left, right) = _fields(seam.model, layer, info.output_shape, shape,
                                           device, dtype, batch_size, forward)
    height, width = int((bottom - top).max()), int((right - left).max())
    # The whole field: a box the image cuts keeps its other side (a field larger than the
    # image is cut to it).
    field_top = torch.where(top == 0, bottom - height, top)
    field_left = torch.where(left == 0, right - width, left)

    found = examples if examples is not None else \
        top_examples(seam, images, layer, k=k, units=units, batch_size=batch_size)
    if found.positions is None:
        raise ValueError("examples: mined without positions (not this layer's channels?)")
    k = found.indices.shape[1]
    indices = found.indices.flatten()
    units_of = found.units.repeat_interleave(k)
    positions = found.positions.flatten(0, 1)
    projections, crops, passed = [], [], set()
    for chunk in torch.arange(len(indices), device=device).split(batch_size):
        x = take(images, indices[chunk]).to(device, dtype)
        spots = positions[chunk]
        projected, met = _project(seam.model, layer, x, units_of[chunk], spots, rule, forward)
        projections.append(projected)
        passed |= met
        crops.append(_crop(x, field_top[spots[:, 0]], field_left[spots[:, 1]], height, width))
    rows, cols = found.positions[..., 0], found.positions[..., 1]
    lead = found.indices.shape
    return Projections(
        indices=found.indices, positions=found.positions,
        projections=torch.cat(projections).view(*lead, *shape),
        boxes=torch.stack([top[rows], left[cols], bottom[rows], right[cols]], -1),
        crops=torch.cat(crops).view(*lead, shape[0], height, width), units=found.units,
        passed=tuple(sorted(passed)))


# -- as a method of visualize ----------------------------------------------------------------
RULE = Param(Options(RULES), "deconvnet",
             "deconvnet's rule at each ReLU: deconvnet (rectify the signal, Zeiler & Fergus) "
             "or guided (also where the forward input was positive, Springenberg et al.)")


def _compute(probe: Probe, key: Key, units: Sequence[int], *, inputs: torch.Tensor,
             examples: TopExamples | None, k: int, deconvnet_rule: str) -> Projections:
    """Projections of the top examples mined already, in the pipeline's one pass over the
    data (``examples`` holds the rows of ``units``; mined here when the run does not show
    them)."""
    return deconvnet(probe, inputs, key, units=units, k=k, rule=deconvnet_rule,
                     examples=examples)


def _rerun(probe: Probe, key: Key, units: torch.Tensor, *, inputs: torch.Tensor,
           deconvnet_rule: str = "deconvnet") -> torch.Tensor:
    return deconvnet(probe, inputs[:SANITY["images"]], key, units=units, k=1,
                     rule=deconvnet_rule).projections[:, 0]


def _write(page: Page, pj: Projections) -> None:
    k = page.params["k"]
    rule = page.params["deconvnet_rule"]
    passed = f"; passed by their own gradient: {', '.join(pj.passed)}" if pj.passed else ""
    how = f" ({rule} rule at each ReLU{passed})" if passed or rule != RULE.default else ""
    page.section(page.tile(pj.projections[:, 0]),
                 f"each unit's strongest activation in the data, projected back to pixels{how}")
    for j in range(len(page.units)):
        page.detail(j)["deconvnet"] = {"indices": pj.indices[j].tolist(),
                                       "boxes": pj.boxes[j].tolist()}
        page.panel(j, [
            ("deconvnet_crops", page.tile(page.show(pj.crops[j]), scale="minmax", cols=k),
             "the image patches under the receptive field of each maximum", "strip"),
            ("deconvnet_projections", page.tile(pj.projections[j], cols=k),
             f"their projections to pixel space ({rule}{passed})", "strip")],
            tile="deconvnet_projections")
    page.keep(pj.projections[:, 0])


DECONVNET = Method(
    "deconvnet", "Deconvnet projections",
    "The top examples of each channel beside their projections back to pixel space (Zeiler & "
    "Fergus 2014): the channel's maximum alone, sent down through the network with the "
    "forward pass's max-pool switches and rectified gradients.",
    _compute, requires={"deconvnet"}, params={"k": K, "deconvnet_rule": RULE}, write=_write,
    rerun=_rerun, split=True)
