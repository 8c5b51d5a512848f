"""Figures that say whether a picture shows the model: how alike a layer's pictures are,
whether they change when the weights are re-drawn, and how pure a unit's top examples are.

* :func:`distinctness`: the mean centred cosine between the pictures of different units
  (1: every unit looks the same, so the pictures say nothing about any one unit).
* :func:`randomized_similarity`: the sanity check of Adebayo et al. (2018), "Sanity checks
  for saliency maps": a method is re-run on a copy of the model whose weights are re-drawn;
  pictures that barely change (figure near 1) show the method or the data, not the model.
* :func:`class_purity`: how much of a unit's top-k dataset examples share one label.

A picture is *flat* when all its pixels are equal: centred, it is the zero vector, with no
direction. Its cosine with any picture counts as 1, so a blank picture (which shows nothing)
can only make a figure look worse, never better.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from .errors import check_int
from .methods import (deconvnet, linear_combination, maximize, ranked_filters, sample_unit,
                      top_examples)
from .probe import Key, probe
from .units import Units, resolve_units

__all__ = ["distinctness", "example_distinctness", "randomized_similarity", "Purity",
           "class_purity", "MAX_UNITS"]

MAX_UNITS = 50   # distinctness looks at the first 50 units: 2,450 ordered pairs


def _centred(pictures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, ...)`` -> unit-norm centred rows ``(U, D)`` in float64 (zero for a flat
    picture) and the ``(U,)`` mask of flat pictures."""
    if not torch.isfinite(pictures).all():
        raise ValueError("pictures contain NaN or infinite values")
    rows = pictures.detach().flatten(1).double()
    blank = (rows == rows[:, :1]).all(1)
    return F.normalize(rows - rows.mean(1, keepdim=True), dim=1), blank


def distinctness(pictures: torch.Tensor, *, max_units: int = MAX_UNITS) -> float:
    """The mean centred cosine over ordered pairs ``i != j`` of the first
    ``min(max_units, U)`` pictures ``(U, ...)`` (each flattened, minus its mean pixel).

    1 means every unit looks the same; about 0 means unrelated pictures. A flat picture's
    cosine with any other counts as 1 (see the module's notes)."""
    if pictures.dim() < 2 or pictures.shape[0] < 2:
        raise ValueError(f"distinctness needs (U, ...) pictures of 2 or more units, got shape "
                         f"{tuple(pictures.shape)}")
    check_int("max_units", max_units, minimum=2)
    rows, blank = _centred(pictures[:max_units])
    gram = (rows @ rows.t()).masked_fill(blank[:, None] | blank[None, :], 1.0)
    n = rows.shape[0]
    return ((gram.sum() - gram.diagonal().sum()) / (n * (n - 1))).item()


def example_distinctness(means: torch.Tensor, data_mean: torch.Tensor, *,
                         max_units: int = MAX_UNITS) -> float:
    """:func:`distinctness` of the means of units' top dataset examples ``(U, ...)`` minus
    the data's mean input: every such mean resembles the average input, which would hide
    how the units differ."""
    if data_mean.numel() != math.prod(means.shape[1:]):
        raise ValueError(f"data_mean has {data_mean.numel()} values, one picture has "
                         f"{math.prod(means.shape[1:])}")
    shift = data_mean.to(means.device, means.dtype).reshape(1, *means.shape[1:])
    return distinctness(means - shift, max_units=max_units)


def _cosine(trained: torch.Tensor, randomized: torch.Tensor) -> torch.Tensor:
    """``(U,)`` centred cosine between each unit's two pictures (1 if either is flat)."""
    a, blank_a = _centred(trained)
    b, blank_b = _centred(randomized)
    return (a * b).sum(1).masked_fill(blank_a | blank_b, 1.0)


def _jaccard(trained: torch.Tensor, randomized: torch.Tensor) -> torch.Tensor:
    """``(U,)`` Jaccard overlap ``|A & B| / |A | B|`` of each unit's two index sets ``(U, k)``
    (indices distinct within a row)."""
    shared = (trained[:, :, None] == randomized[:, None, :]).any(2).sum(1).double()
    return shared / (trained.shape[1] + randomized.shape[1] - shared)


def _examples(model, layer, units, input_shape, images, k=9, **kwargs):
    return top_examples(model, images, layer, k=k, units=units, **kwargs).indices


def _maximize(model, layer, units, input_shape, steps=100, restarts=3, **kwargs):
    return maximize(model, layer, units=units, steps=steps, restarts=restarts,
                    input_shape=input_shape, **kwargs).images


def _sampling(model, layer, units, input_shape, n_samples=20, **kwargs):
    return sample_unit(model, layer, units=units, n_samples=n_samples, **kwargs).contrast


def _filters(model, layer, units, input_shape, **kwargs):
    return ranked_filters(model, layer, units=units, input_shape=input_shape, **kwargs).indices


def _combination(model, layer, units, input_shape, **kwargs):
    return linear_combination(model, layer, units=units, input_shape=input_shape,
                              **kwargs).images


def _deconvnet(model, layer, units, input_shape, images, **kwargs):
    return deconvnet(model, images, layer, units=units, k=1, **kwargs).projections[:, 0]


# Registry name -> (a run giving pictures or top-k indices, how two runs compare). The runs'
# small defaults keep a sanity check cheap; method_kwargs override them.
_RUNS = {"examples": (_examples, _jaccard), "maximize": (_maximize, _cosine),
         "sampling": (_sampling, _cosine), "filters": (_filters, _jaccard),
         "deconvnet": (_deconvnet, _cosine), "combination": (_combination, _cosine)}


def randomized_similarity(model: torch.nn.Module, layer: Key,
                          method: str | Callable[..., torch.Tensor], *, mode: str = "layer",
                          units: Units = None, seed: int = 0,
                          input_shape: tuple[int, ...] | None = None,
                          **method_kwargs: object) -> float:
    """How much ``method``'s result for units of ``layer`` survives re-drawing the weights
    (Adebayo et al. 2018): near 1, the result does not show what the model learned.

    The method runs on the model and on a deep copy whose incoming weights of ``layer``
    (``mode="layer"``) or of ``layer`` and every layer below it (``"cascade"``) are re-drawn
    from ``N(0, s^2)``, ``s`` the std of the trained tensor, biases kept (seeded by
    ``seed``); ``model`` itself never changes. The figure is the mean over ``units``
    (``None``: all) of the centred cosine between a unit's two pictures (1 if either is
    flat); for ``"examples"`` and ``"filters"``, whose results are index sets, their mean
    Jaccard overlap.

    ``method`` is a name of :data:`featvis.visualize.METHODS` (run with small defaults that
    ``method_kwargs`` override; ``"examples"`` needs ``images=``) or a callable
    ``f(model, layer, units, **method_kwargs) -> (U, ...)`` pictures, given ``units`` as an
    index tensor. ``input_shape`` (one input's shape) is needed for a module other than a
    DBN unless ``images=`` is a tensor.
    """
    if not callable(method) and method not in _RUNS:
        raise ValueError(f"unknown method {method!r}: choose from {', '.join(_RUNS)} or pass "
                         "a callable")
    images = method_kwargs.get("images")
    if method in ("examples", "deconvnet") and images is None:
        raise ValueError(f"method {method!r} ranks data: pass images= to "
                         "randomized_similarity")
    if input_shape is None and isinstance(images, torch.Tensor):
        input_shape = tuple(images.shape[1:])
    seam = probe(model, input_shape)
    chosen = resolve_units(units, seam.layer(layer).units, seam.device)
    randomized = seam.randomized(layer, mode, seed)      # refuses before any method runs
    if callable(method):
        run, compare, kwargs = method, _cosine, method_kwargs
    else:
        (run, compare), kwargs = _RUNS[method], {"input_shape": seam.input_shape,
                                                  **method_kwargs}
    return compare(run(model, layer, chosen, **kwargs),
                   run(randomized, layer, chosen, **kwargs)).mean().item()


class Purity(NamedTuple):
    """Per unit ``(U,)``: ``share`` of the most common label among its top-k examples,
    ``entropy_bits`` of their label distribution, ``top_class`` that label (ties to the
    lower label)."""

    share: torch.Tensor
    entropy_bits: torch.Tensor
    top_class: torch.Tensor


def class_purity(indices: torch.Tensor, labels: torch.Tensor) -> Purity:
    """The label purity of each unit's top-k dataset examples: ``indices (U, k)`` into the
    data (e.g. :attr:`TopExamples.indices`), ``labels (N,)`` integer labels of the data."""
    if (indices.dim() != 2 or indices.numel() == 0 or indices.is_floating_point()
            or indices.dtype == torch.bool):
        raise ValueError(f"indices must be a non-empty (U, k) tensor of integers, got "
                         f"{indices.dtype} of shape {tuple(indices.shape)}")
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be (N,) integer labels, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}")
    if indices.min() < 0 or indices.max() >= labels.shape[0]:
        raise ValueError(f"indices must be in 0..{labels.shape[0] - 1} (one per label)")
    classes, codes = labels.to(indices.device)[indices].unique(return_inverse=True)
    p = F.one_hot(codes, classes.numel()).sum(1).double() / indices.shape[1]    # (U, C)
    share, best = p.max(1)
    return Purity(share=share, entropy_bits=-torch.special.xlogy(p, p).sum(1) / math.log(2),
                  top_class=classes[best])
