"""Methods as plugins: a :class:`Method` value says what a method computes, what it needs of
a layer, which parameters it takes and how its pictures are drawn; :func:`register` adds one
to the registry that ``featvis.visualize``, the gallery and the CLI read.

A method's ``compute(probe, key, units, **params)`` returns a result whose ``.images`` are
``(U, *input_shape)`` or ``(U, P, *input_shape)`` pictures, one row per unit of ``units``.
Besides its declared ``params`` it may take any of the keywords of :data:`CONTEXT` (the
pipeline passes those its signature names). ``write(page, result)`` draws it on the layer's
page (:class:`Page`); the default draws ``.images`` as an overview grid and a picture (or a
strip) per unit. ``rerun(probe, key, units, **params)`` is the sanity re-run on a randomized
copy (Adebayo et al. 2018), by default ``compute(...).images``.

Example (a plugin: the units' incoming weights, as pictures)::

    from featvis.methods import Method, register

    def weights(probe, key, units):
        rows = probe.incoming_weights(key)[units]
        return SimpleNamespace(images=rows.reshape(len(units), *probe.input_shape))

    register(Method("weights", "Incoming weights", "Each unit's weights on the input.",
                    weights, requires={"weights", "filters"}))
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from ..data.stream import Data
from ..params import Param
from ..seam import Key, Probe

__all__ = ["Method", "Page", "register", "registered", "method", "CONTEXT", "SANITY"]

# The sanity checks' re-runs (Adebayo et al. 2018) on the first units shown: small settings
# that keep them within about half of visualize's own time.
SANITY = {"units": 20, "images": 2000, "steps": 50, "restarts": 2, "samples": 20}

# What the pipeline may hand a method's compute besides its declared parameters.
CONTEXT = {
    "inputs": "the data as the model sees them: a tensor (N, *input_shape) or a dataset "
              "(read with featvis.data.stream's take and batches)",
    "examples": "the layer's top examples of the units, mined in the one pass over the data",
    "statistics": "the layer's unit statistics (featvis.methods.running_statistics."
                  "UnitStatistics), gathered in the same pass",
    "seed": "the run's seed",
    "progress": "whether to show progress bars",
}


class Page(Protocol):
    """What a method's writer may draw on: one layer's page of the run folder (implemented by
    :class:`featvis.pipeline.visualization.LayerPage`)."""

    probe: Probe
    key: Key                         # the layer
    units: list[int]                 # the units shown, in order; row j of a result is units[j]
    params: dict[str, Any]           # the method's parameters as resolved for this run
    images: Data                     # the inputs as shown (a tensor, or a dataset: take())
    model_images: Data               # the inputs as the model sees them
    model_sample: torch.Tensor       # the head of model_images (a tensor's whole)
    labels: torch.Tensor | None      # their classes, if known
    seed: int

    def show(self, x: torch.Tensor) -> torch.Tensor: ...          # model space -> shown
    def tile(self, pictures: torch.Tensor, **kwargs: Any) -> Any: ...
    def signed_grid(self, pictures: torch.Tensor, weights: torch.Tensor, cols: int) -> Any: ...
    def section(self, array: Any, caption: str, name: str | None = None) -> None: ...
    def panel(self, j: int, pictures: Sequence[tuple], facts: Sequence = (),
              tile: str | None = None, tile_cells: int = 1) -> None: ...
    def detail(self, j: int) -> dict: ...
    def figure(self, label: str, value: float, about: str | None = None) -> None: ...
    def flag(self, label: str, value: float, explanation: str) -> None: ...
    def keep(self, pictures: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class Method:
    """A method as data; see the module docstring. ``requires``: keys of
    :meth:`featvis.seam.Probe.supports` the layer must have (the first missing one's reason
    is what the gallery says); ``params``: name -> :class:`featvis.params.Param`.
    ``overlap``: results are index sets (sanity re-runs compare them by Jaccard overlap, not
    cosine); ``made_of_data``: its pictures are made of inputs (distinct only once the data
    mean is taken out); ``split``: its units are shared among the ranks of a distributed run
    (the others run on rank 0 alone)."""

    name: str
    title: str
    legend: str
    compute: Callable[..., Any]
    requires: frozenset[str] = frozenset()
    params: Mapping[str, Param] = field(default_factory=dict)
    write: Callable[[Page, Any], None] | None = None
    rerun: Callable[..., torch.Tensor] | None = None
    overlap: bool = False
    made_of_data: bool = False
    split: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"a method's name must be an identifier, got {self.name!r}")
        for what in ("compute",) + (("write",) if self.write else ()) + \
                (("rerun",) if self.rerun else ()):
            if not callable(getattr(self, what)):
                raise TypeError(f"method {self.name!r}: {what} must be callable")
        object.__setattr__(self, "requires", frozenset(self.requires))
        object.__setattr__(self, "params", dict(self.params))

    def unavailable(self, probe: Probe, key: Key) -> str | None:
        """Why the method does not apply to layer ``key`` (``None`` if it does): a lookup in
        the probe's :meth:`~featvis.seam.Probe.supports`, never a trial run."""
        supports = probe.supports(key)
        unknown = self.requires - supports.keys()
        if unknown:
            raise ValueError(f"method {self.name!r} requires {sorted(unknown)[0]!r}, which no "
                             f"probe offers (known: {', '.join(supports)})")
        return next((supports[need] for need in supports
                     if need in self.requires and supports[need] is not None), None)

    def run_compute(self, probe: Probe, key: Key, units: Sequence[int], **available: Any
                    ) -> Any:
        """``compute`` with those of ``available`` (parameters and :data:`CONTEXT`) that it
        names."""
        return self.compute(probe, key, units, **named(self.compute, available))

    def run_rerun(self, probe: Probe, key: Key, units: torch.Tensor, **available: Any
                  ) -> torch.Tensor:
        """The sanity re-run's pictures (or index sets) for ``units``."""
        if self.rerun is not None:
            return self.rerun(probe, key, units, **named(self.rerun, available))
        return self.run_compute(probe, key, units, **available).images


def named(function: Callable[..., Any], available: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``available`` that ``function`` takes by name (all if it takes
    ``**kwargs``)."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(available)
    return {name: value for name, value in available.items() if name in parameters}


_REGISTRY: dict[str, Method] = {}


def register(method: Method, replace: bool = False) -> Method:
    """Add ``method`` to the registry (after those already there); a taken name is a
    ``ValueError`` unless ``replace=True``. Returns ``method``."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a featvis.methods.Method, got "
                        f"{type(method).__name__}")
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a method called {method.name!r} is registered already (pass "
                         "replace=True to replace it)")
    _REGISTRY[method.name] = method
    return method


def registered() -> dict[str, Method]:
    """Every registered method by name, featvis's own first (:mod:`featvis.methods.builtin`,
    registered when the package is imported), in registry order."""
    return dict(_REGISTRY)


def method(name: str) -> Method:
    """The registered method called ``name`` (a ``ValueError`` listing them if none)."""
    methods = registered()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(methods)}")
    return methods[name]
