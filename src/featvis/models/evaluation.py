"""Numbers that say how good a model and its visualizations are.

Model figures: mean-field reconstruction error per layer, the stochastic pseudo-likelihood,
the exact log partition function of small RBMs, annealed importance sampling (AIS) for large
ones (Salakhutdinov & Murray 2008), the test log-likelihood that follows, and linear-probe
accuracy of each layer's features. Visualization figures: how much the methods agree on
each unit (cosine between the centred pictures).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.tensors import check_images, iter_batches
from ..errors import FeatvisError
from ..params import check_int
from .dbn import DBN
from .rbm import RBM, bernoulli

__all__ = ["reconstruction_error", "pseudo_likelihood", "log_partition_exact",
           "default_betas", "AISEstimate", "log_partition_ais", "log_likelihood",
           "linear_probe", "method_agreement", "evaluate_model", "binarize",
           "MAX_EXACT_UNITS"]

MAX_EXACT_UNITS = 25


READ_CHUNK = 10_000     # rows per chunk when a whole data set is pushed through a model


def binarize(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Binary images sampled once with pixel intensities as probabilities (Salakhutdinov &
    Murray 2008): what likelihoods of a Bernoulli RBM are defined on."""
    return bernoulli(images, torch.Generator(device=images.device).manual_seed(seed))


def _binary(rbm: RBM, what: str) -> None:
    """Likelihoods here are those of binary visible units: refuse Gaussian ones."""
    if rbm.visible != "binary":
        raise FeatvisError(f"{what} is defined here for binary visible units; this RBM's are "
                           f"{rbm.visible}")


def reconstruction_error(model: DBN | RBM, images: torch.Tensor) -> list[float]:
    """Mean-field squared reconstruction error per case, one figure per RBM (layer d's RBM
    reconstructs layer d-1's means from its own hidden probabilities)."""
    rbms = [model] if isinstance(model, RBM) else list(model.rbms)
    images = check_images(images, rbms[0].n_visible, unit_range=rbms[0].visible == "binary")
    totals = [0.0] * len(rbms)
    with torch.no_grad():
        for batch in iter_batches(images.to(rbms[0].weight.device), READ_CHUNK):
            h = batch
            for d, rbm in enumerate(rbms):
                hidden = rbm.hidden_probs(h)
                totals[d] += (rbm.visible_mean(hidden) - h).pow_(2).sum().item()
                h = hidden
    return [t / images.shape[0] for t in totals]


def pseudo_likelihood(rbm: RBM, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Stochastic pseudo-log-likelihood per case, as scikit-learn's ``score_samples``:
    ``D * log sigmoid(F(v~) - F(v))`` with ``v~`` = ``v`` with one random bit flipped."""
    _binary(rbm, "the pseudo-likelihood")
    images = check_images(images, rbm.n_visible)
    generator = torch.Generator().manual_seed(seed)
    flip = torch.randint(0, rbm.n_visible, (images.shape[0],), generator=generator)
    device = rbm.weight.device
    out = []
    with torch.no_grad():
        for v, idx in zip(iter_batches(images, READ_CHUNK), iter_batches(flip, READ_CHUNK)):
            v = v.to(device)
            flipped = v.clone()
            rows = torch.arange(v.shape[0], device=device)
            flipped[rows, idx.to(device)] = 1 - flipped[rows, idx.to(device)]
            delta = rbm.free_energy(flipped).double() - rbm.free_energy(v).double()
            out.append(-rbm.n_visible * F.softplus(-delta))
    return torch.cat(out)


def _binary_states(n: int, start: int, stop: int, device) -> torch.Tensor:
    """Rows ``start .. stop - 1`` of the ``2^n`` binary vectors, float64 ``(rows, n)``."""
    codes = torch.arange(start, stop, device=device)[:, None]
    return ((codes >> torch.arange(n, device=device)) & 1).double()


def log_partition_exact(rbm: RBM) -> float:
    """Exact ``log Z`` by enumerating the smaller layer (at most 25 units), in float64."""
    _binary(rbm, "the exact log Z")
    W = rbm.weight.detach().double()
    b, c = rbm.visible_bias.detach().double(), rbm.hidden_bias.detach().double()
    if rbm.n_hidden <= rbm.n_visible:
        n, bias, other_bias, weight = rbm.n_hidden, c, b, W          # sum over h: h.c + sp(b + hW)
    else:
        n, bias, other_bias, weight = rbm.n_visible, b, c, W.t()
    if n > MAX_EXACT_UNITS:
        raise ValueError(f"exact log Z needs 2^{n} terms: refusing above {MAX_EXACT_UNITS} "
                         "units on the smaller side; use log_partition_ais")
    terms = []
    for start in range(0, 2 ** n, 2 ** 16):
        s = _binary_states(n, start, min(2 ** n, start + 2 ** 16), W.device)
        terms.append(s @ bias + F.softplus(s @ weight + other_bias).sum(1))
    return torch.logsumexp(torch.cat(terms), 0).item()


def default_betas() -> np.ndarray:
    """S&M's schedule: steps of 1e-3 up to 0.5, 1e-4 up to 0.9, 1e-5 up to 1 (14,501 values)."""
    return np.concatenate([np.linspace(0.0, 0.5, 501)[:-1], np.linspace(0.5, 0.9, 4001)[:-1],
                           np.linspace(0.9, 1.0, 10001)])


class AISEstimate(NamedTuple):
    """``log_z``: log of the mean importance weight; ``low``/``high``: log Z -/+ 3 standard
    errors of that mean (``low`` is ``-inf`` when the interval reaches zero)."""

    log_z: float
    low: float
    high: float


def _base_rate_bias(images: torch.Tensor | None, n_visible: int, smoothing: float = 0.05
                    ) -> torch.Tensor:
    """Visible biases of the base-rate model: smoothed log-odds of each pixel being on."""
    if images is None:
        return torch.zeros(n_visible, dtype=torch.float64)
    images = check_images(images, n_visible, name="base_rate_images")
    p = (images.double().mean(0) + smoothing) / (1 + 2 * smoothing)
    return torch.log(p) - torch.log1p(-p)


def log_partition_ais(rbm: RBM, n_runs: int = 100, betas: Sequence[float] | None = None,
                      base_rate_images: torch.Tensor | None = None, seed: int = 0,
                      progress: bool = False) -> AISEstimate:
    """Estimate ``log Z`` by annealed importance sampling from a base-rate model (all runs
    batched). ``base_rate_images=None`` gives a uniform base (zero biases)."""
    _binary(rbm, "AIS")
    check_int("n_runs", n_runs, minimum=2)     # the error bars need two runs
    betas = default_betas() if betas is None else np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0 or betas[-1] != 1 or \
            not (np.diff(betas) > 0).all():
        raise ValueError("betas must increase strictly from 0 to 1")
    device = rbm.weight.device
    W = rbm.weight.detach()
    b = rbm.visible_bias.detach()
    c = rbm.hidden_bias.detach()
    base = _base_rate_bias(base_rate_images, rbm.n_visible).to(device)
    base32 = base.float()
    generator = torch.Generator(device=device).manual_seed(seed)

    def statistics(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the log-probabilities need of ``v``: ``W v + c``, ``v.b_A`` and ``v.b``."""
        v64 = v.double()
        return torch.addmm(c, v, W.t()), v64 @ base, v64 @ b.double()

    def log_p(stats, beta: float) -> torch.Tensor:
        """Unnormalized log-probability at ``beta`` (the base model's hidden units, with no
        connections, add a constant absorbed in its log Z)."""
        wh, v_base, v_model = stats
        return (1 - beta) * v_base + beta * v_model + F.softplus(beta * wh.double()).sum(1)

    with torch.no_grad():
        v = bernoulli(torch.sigmoid(base32).expand(n_runs, -1), generator)
        stats = statistics(v)
        log_w = -log_p(stats, 0.0)
        for k in tqdm(range(1, len(betas)), desc="AIS", unit="beta", disable=not progress,
                      leave=False):
            beta = float(betas[k])
            log_w += log_p(stats, beta)
            if k == len(betas) - 1:
                break
            # One Gibbs transition that leaves the distribution at beta invariant.
            h = bernoulli(torch.sigmoid(beta * stats[0]), generator)
            v = bernoulli(torch.sigmoid((1 - beta) * base32 + beta * torch.addmm(b, h, W)),
                          generator)
            stats = statistics(v)
            log_w -= log_p(stats, beta)
    log_z_base = F.softplus(base).sum().item() + rbm.n_hidden * math.log(2)
    log_w = log_w.cpu()
    top = log_w.max()
    log_mean = (torch.logsumexp(log_w, 0) - math.log(n_runs)).item()
    log_se = (torch.log((log_w - top).exp().std()) + top - 0.5 * math.log(n_runs)).item()
    three = math.log(3) + log_se
    high = np.logaddexp(log_mean, three)
    low = log_mean + math.log1p(-math.exp(three - log_mean)) if three < log_mean else -math.inf
    return AISEstimate(log_z_base + log_mean, log_z_base + low, log_z_base + float(high))


def log_likelihood(rbm: RBM, images: torch.Tensor, log_z: float) -> float:
    """Mean log-probability ``-F(v) - log Z`` of ``images`` under ``rbm``."""
    _binary(rbm, "the log-likelihood")
    images = check_images(images, rbm.n_visible)
    with torch.no_grad():
        total = sum(rbm.free_energy(v.to(rbm.weight.device)).double().sum().item()
                    for v in iter_batches(images, READ_CHUNK))
    return -total / images.shape[0] - log_z


def _features(model: DBN, images: torch.Tensor, layer: int) -> torch.Tensor:
    """Layer ``layer``'s probabilities (the pixels for 0), computed in chunks."""
    if layer == 0:
        return images
    with torch.no_grad():
        return torch.cat([model.transform(x, layer) for x in iter_batches(images, READ_CHUNK)])


def linear_probe(model: DBN, train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], layer: int,
                 max_iter: int = 200, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Test accuracy of softmax regression on layer ``layer``'s features (0 = raw pixels),
    fitted by full-batch L-BFGS."""
    if layer != 0:
        model.check_layer(layer)
    device = model.rbms[0].weight.device
    (x, y), (xt, yt) = train, test
    for name, images, labels in (("train", x, y), ("test", xt, yt)):
        check_images(images, model.sizes[0], name=f"{name} images")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{name} labels: expected shape ({images.shape[0]},), got "
                             f"{tuple(labels.shape)}")
    features = _features(model, x.to(device), layer)
    classes = int(max(y.max().item(), yt.max().item())) + 1
    generator = torch.Generator(device=device).manual_seed(seed)
    weight = (0.01 * torch.randn(features.shape[1], classes, generator=generator,
                                 device=device)).requires_grad_()
    bias = torch.zeros(classes, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter,
                                  line_search_fn="strong_wolfe")
    targets = y.to(device)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight + bias, targets) + \
            weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = (_features(model, xt.to(device), layer) @ weight + bias).argmax(1)
        return (predicted == yt.to(device)).double().mean().item()


def method_agreement(pictures: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cosine similarity between the centred pictures of each pair of methods, per unit.

    ``pictures`` maps a method name to ``(U, D)`` images of the same units; the result maps
    ``"a~b"`` to a ``(U,)`` tensor.
    """
    centred = {name: F.normalize(p - p.mean(1, keepdim=True), dim=1)
               for name, p in pictures.items()}
    return {f"{a}~{b}": (centred[a] * centred[b]).sum(1)
            for a, b in itertools.combinations(centred, 2)}


def evaluate_model(dbn: DBN, train: tuple[torch.Tensor, torch.Tensor],
                   test: tuple[torch.Tensor, torch.Tensor], ais_runs: int = 100,
                   seed: int = 0, progress: bool = True) -> dict:
    """All model figures of a DBN as a JSON-ready dict: per layer the test reconstruction
    error and probe accuracy (layer 0: raw pixels); for the first RBM the pseudo-likelihood
    and, unless ``ais_runs`` is 0, AIS log Z and the test log-likelihood, all three on
    images binarized once with ``seed`` (a Bernoulli RBM's likelihood is defined on binary
    inputs)."""
    _binary(dbn.rbms[0], "evaluate (likelihoods and probes on labelled MNIST)")
    errors = reconstruction_error(dbn, test[0])
    layers = []
    for d in tqdm(range(dbn.n_layers + 1), desc="linear probes", disable=not progress,
                  leave=False):
        layers.append({"layer": d, "name": "pixels" if d == 0 else f"layer {d}",
                       "units": dbn.sizes[d],
                       "reconstruction_error": None if d == 0 else errors[d - 1],
                       "probe_accuracy": linear_probe(dbn, train, test, d, seed=seed)})
    first = dbn.rbms[0]
    binary_test = binarize(test[0], seed)
    rbm1 = {"binarized": True,
            "pseudo_likelihood": pseudo_likelihood(first, binary_test, seed=seed).mean().item()}
    if ais_runs:
        estimate = log_partition_ais(first, n_runs=ais_runs,
                                     base_rate_images=binarize(train[0], seed + 1),
                                     seed=seed, progress=progress)
        # JSON has no infinity: a lower bound at -inf (interval reaching zero) is None.
        low = estimate.low if math.isfinite(estimate.low) else None
        rbm1 |= {"ais_runs": ais_runs, "log_z": estimate.log_z, "log_z_low": low,
                 "log_z_high": estimate.high,
                 "test_log_likelihood": log_likelihood(first, binary_test, estimate.log_z)}
    return {"layers": layers, "rbm1": rbm1}
