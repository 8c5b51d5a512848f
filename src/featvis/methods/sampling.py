"""Method 3: unit sampling, p(x | h_i = 1): inputs drawn from a generative model with the unit
clamped on, and their contrast with the same draws with it off (what switching the unit on
changes, without the picture that every unit shares). Each model kind samples itself
through its probe (:meth:`featvis.seam.Probe.sample`): a DBN by
:mod:`featvis.models.dbn_sampling`, a convolutional DBN by :meth:`~featvis.models.ConvDBN.sample`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..params import COUNT, POSITIVE, SEED, Interval, Options, Param, validated
from ..figures import FLAT, SUSPECT
from ..models.dbn_sampling import VARIANTS
from ..seam import Key, Probe, probe
from ..units import Units, resolve_units
from .registry import SANITY, Method, Page

__all__ = ["UnitSamples", "sample_unit"]

@dataclass
class UnitSamples:
    """``samples (U, S, *input_shape)`` pixel means (probabilities of binary pixels) given
    ``h_{d,i} = 1`` (a DBN's are ``(U, S, D)``), ``mean (U, *input_shape)`` their mean,
    ``units (U,)``, and ``contrast (U, *input_shape)``: the mean minus the mean of the same
    draws with the unit off."""

    samples: torch.Tensor
    mean: torch.Tensor
    units: torch.Tensor
    contrast: torch.Tensor


@validated(n_samples=POSITIVE, variant=Options(VARIANTS), n_chains=POSITIVE, burn_in=COUNT,
           interval=POSITIVE, seed=SEED)
def sample_unit(model: nn.Module | Probe, layer: Key, units: Units = None, n_samples: int = 100,
                variant: str = "one-hot", n_chains: int = 10, burn_in: int = 1000,
                interval: int = 10, seed: int = 0, progress: bool = False) -> UnitSamples:
    """Samples of the input given that unit ``i`` of hidden layer ``layer`` is on, and their
    contrast with the unit off (a model with a generative side only:
    :class:`~featvis.seam.UnsupportedError` otherwise). In a DBN a unit's random numbers
    depend on ``(seed, unit)`` only: its results are the same alone or with other units. A
    model with its own sampler (a convolutional DBN: ``variant="one-hot"`` only, the chain
    settings unused) gives its samples for ``seed``."""
    seam = probe(model)
    seam.generative()                     # refuses a model with no p(x | h)
    info = seam.layer(layer)
    layer = info.name
    units = resolve_units(units, info.units, seam.device)
    with torch.no_grad():
        samples, contrast = seam.sample(layer, units, n_samples, seed, variant,
                                        n_chains=n_chains, burn_in=burn_in, interval=interval,
                                        progress=progress)
    return UnitSamples(samples=samples, mean=samples.mean(1), units=units, contrast=contrast)


# -- as a method of visualize ----------------------------------------------------------------
DECLARED = {
    "samples": Param(Interval(int, 1, 10_000), 100, "samples per unit"),
    "variant": Param(Options(VARIANTS), "one-hot", "unit-sampling variant"),
}
_STRIP = 10            # samples shown per unit
_FAINT = (f"switching most units on changes the visible mean by under {FLAT:.0%} of the "
          "data's standard deviation: the layers below mostly stay off top-down, so the "
          "contrasts show the direction of a very small effect, scaled up")


def _compute(probe: Probe, key: Key, units: Sequence[int], *, samples: int, variant: str,
             seed: int, progress: bool) -> UnitSamples:
    return sample_unit(probe, key, units=units, n_samples=samples, variant=variant, seed=seed,
                       progress=progress)


def _rerun(probe: Probe, key: Key, units: torch.Tensor, *, variant: str = "one-hot",
           n_samples: int = SANITY["samples"]) -> torch.Tensor:
    return sample_unit(probe, key, units=units, n_samples=n_samples, variant=variant).contrast


def _write(page: Page, sm: UnitSamples) -> None:
    page.section(page.tile(sm.contrast),
                 "what switching each unit on adds (light) and removes (dark): "
                 "E[x | unit on] - E[x | unit off]")
    # A contrast far below the data's spread (its standard deviation: a whitened data set's
    # range is its outliers'): the layers below hardly respond top-down (a sparse layer whose
    # biases keep it off); each tile is scaled on its own, so say so.
    faint = sm.contrast.flatten(1).abs().amax(1) < FLAT * page.model_sample.std().item()
    for j in range(len(page.units)):
        caption = "contrast: their mean minus the mean with the unit off"
        if faint[j]:
            caption = (f"FAINT: switching the unit on changes the mean by under {FLAT:.0%} of "
                       "the data's standard deviation (shown scaled up): the layers below "
                       "hardly respond")
        page.panel(j, [
            ("samples_strip", page.tile(sm.samples[j, :_STRIP], scale="minmax", cols=_STRIP),
             "samples", "strip"),
            ("samples_contrast", page.tile(sm.contrast[j:j + 1]), caption, "single"),
            ("samples_mean", page.tile(sm.mean[j:j + 1], scale="minmax"),
             "their mean, p(x | unit on)", "single")], [("faint contrast", bool(faint[j]))])
    label = f"faint contrasts (peak under {FLAT:.0%} of the data's standard deviation)"
    page.figure(label, faint.sum().item(),
                "units whose clamping hardly changes what the layers below draw: 0 is good")
    if faint.float().mean() > SUSPECT:
        page.flag(label, faint.sum().item(), _FAINT)
    page.keep(sm.contrast)


SAMPLING = Method(
    "sampling", "Unit sampling",
    "Inputs sampled from the deep belief net with the unit clamped on, p(x | h = 1) (Erhan et "
    "al. 2009; Hinton et al. 2006; in a convolutional DBN the pooling unit at the centre of "
    "the filter's map, Lee et al. 2009), shown as the contrast with the same draws with the "
    "unit off, which removes what the generative biases draw for every unit; the raw mean "
    "is on each unit's page.",
    _compute, requires={"sampling"}, params=DECLARED, write=_write, rerun=_rerun, split=True)
