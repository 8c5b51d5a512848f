"""The sanity checks of Adebayo et al. (2018), "Sanity checks for saliency maps": a method is
re-run on a copy of the model whose weights are re-drawn; pictures that barely change
(figure near 1) show the method or the data, not the model. Each method's re-run is its own
(:attr:`featvis.methods.Method.rerun`, with the small settings of
:data:`featvis.methods.SANITY`)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from ..figures import centred_cosine, jaccard_overlap
from ..methods.registry import Method, method as registered_method, named
from ..seam import Key, Probe, probe
from ..units import Units, resolve_units

__all__ = ["randomized_similarity", "rerun_figure"]


def randomized_similarity(model: nn.Module | Probe, layer: Key,
                          method: str | Method | Callable[..., torch.Tensor], *,
                          mode: str = "layer", units: Units = None, seed: int = 0,
                          input_shape: tuple[int, ...] | None = None,
                          **method_kwargs: object) -> float:
    """How much ``method``'s result for units of ``layer`` survives re-drawing the weights:
    near 1, the result does not show what the model learned.

    The method runs on the model and on a deep copy whose incoming weights of ``layer``
    (``mode="layer"``) or of ``layer`` and every layer below it (``"cascade"``) are re-drawn
    from ``N(0, s^2)``, ``s`` the std of the trained tensor, biases kept (seeded by
    ``seed``); ``model`` itself never changes. The figure is the mean over ``units``
    (``None``: all) of the centred cosine between a unit's two pictures (1 if either is
    flat); for a method whose results are index sets (``examples``, ``filters``), their
    mean Jaccard overlap.

    ``method`` is a registered method (or its name), whose sanity re-run takes
    ``method_kwargs`` (``images=``: the data, for a method that ranks them), or a callable
    ``f(model, layer, units, **method_kwargs) -> (U, ...)`` pictures, given ``units`` as an
    index tensor. ``input_shape`` (one input's shape) is needed for a module other than a
    DBN unless ``images=`` is a tensor.
    """
    if isinstance(method, str):
        method = registered_method(method)
    images = method_kwargs.get("images")
    if isinstance(method, Method) and _needs_inputs(method) and images is None:
        raise ValueError(f"method {method.name!r} ranks data: pass images= to "
                         "randomized_similarity")
    if input_shape is None and isinstance(images, torch.Tensor):
        input_shape = tuple(images.shape[1:])
    seam = probe(model, input_shape)
    chosen = resolve_units(units, seam.layer(layer).units, seam.device)
    randomized = seam.like(seam.randomized(layer, mode, seed))   # refuses before any run
    if not isinstance(method, Method):
        return centred_cosine(method(seam.model, layer, chosen, **method_kwargs),
                              method(randomized.model, layer, chosen, **method_kwargs)
                              ).mean().item()
    kwargs = dict(method_kwargs)
    if "images" in kwargs:
        kwargs["inputs"] = kwargs.pop("images")
    unknown = set(kwargs) - set(named(method.rerun or method.compute, kwargs))
    if unknown:
        raise TypeError(f"method {method.name!r}'s re-run takes no argument "
                        f"{sorted(unknown)[0]!r}")
    return rerun_figure(method, seam, randomized, layer, chosen, kwargs)


def rerun_figure(method: Method, trained: Probe, randomized: Probe, key: Key,
                 units: torch.Tensor, kwargs: dict[str, Any]) -> float:
    """The mean randomization figure of ``method``'s re-runs on ``trained`` and
    ``randomized`` (cosine, or Jaccard overlap for index sets)."""
    compare = jaccard_overlap if method.overlap else centred_cosine
    return compare(method.run_rerun(trained, key, units, **kwargs),
                   method.run_rerun(randomized, key, units, **kwargs)).mean().item()


def _needs_inputs(method: Method) -> bool:
    """Whether the method's re-run needs the data (an ``inputs`` without default)."""
    rerun = method.rerun or method.compute
    parameter = inspect.signature(rerun).parameters.get("inputs")
    return parameter is not None and parameter.default is inspect.Parameter.empty
