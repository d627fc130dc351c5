"""Task appropriateness ρ of a layer: how much task information its MSE-optimal k-level quantiser keeps.

**This is the project's definition, not the paper's.** The paper (Harell et al., arXiv
2305.17295, Fig. 3) plots a per-layer "task appropriateness" but its exact formula was not
available to us (see ``PAPER_NOTES.md``). The estimator registered here as ``kmeans-mi``
(the default) computes::

    ρ_k(L) = I(Q_k(Y_L); T) / min(H(T), log2 k)

where Y_L are the features of layer L (one flattened vector per sample, optionally reduced
by PCA, see :func:`pca_reduce`), Q_k the MSE-optimal k-level vector quantiser fitted by
k-means (scikit-learn ``KMeans``, or ``MiniBatchKMeans`` for many samples, fixed
``random_state``), T the task label, and I and H plug-in estimates from counts, in bits.
ρ lies in [0, 1]; 1 means the k MSE cells carry all the task information they could.
The plug-in mutual information is biased upwards by about (k-1)(C-1) / (2 n ln 2) bits
for n samples and C classes, so ρ of unrelated labels is slightly above 0 for large k / n.

Estimators are pluggable: anything with a ``name`` and
``__call__(features, labels, k, seed=0) -> float`` can be registered with
:func:`register_estimator` (e.g. the paper's exact formula, once known) and chosen by name
(``vcm appropriateness --estimator NAME``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from vcm_plugin.errors import VcmError
from vcm_plugin.evaluation.bootstrap import bootstrap_indices  # the one image bootstrap (paired resamples)

DEFAULT_ESTIMATOR = "kmeans-mi"
CI_METHODS = ("percentile", "basic")


class AnalysisError(VcmError, ValueError):
    """A bad input to the appropriateness analysis (names the input: layer, k, estimator, labels)."""


class UnknownEstimatorError(AnalysisError, KeyError):
    """No ρ estimator is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@runtime_checkable
class RhoEstimator(Protocol):
    """A ρ estimator: ``name`` and ``__call__(features (n, d), labels (n,), k, seed) -> ρ in [0, 1]``."""

    name: str

    def __call__(self, features: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> float: ...


_ESTIMATORS: dict[str, RhoEstimator] = {}


def register_estimator(estimator: RhoEstimator, replace: bool = False) -> RhoEstimator:
    """Register ``estimator`` under ``estimator.name`` (``replace=True`` to override one); returns it."""
    name = getattr(estimator, "name", None)
    if not isinstance(name, str) or not name or not callable(estimator):
        raise TypeError(f"a ρ estimator needs a non-empty str `name` and must be callable, got {estimator!r}")
    if name in _ESTIMATORS and not replace:
        raise ValueError(f"ρ estimator {name!r} is already registered (pass replace=True to override)")
    _ESTIMATORS[name] = estimator
    return estimator


def estimator_names() -> list[str]:
    """The registered estimator names, sorted."""
    return sorted(_ESTIMATORS)


def get_estimator(name: str) -> RhoEstimator:
    """The estimator registered as ``name``; :class:`UnknownEstimatorError` lists the known ones."""
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise UnknownEstimatorError(f"unknown ρ estimator {name!r}; known: {', '.join(estimator_names())}") from None


# -- information from counts ------------------------------------------------------------------
def entropy_bits(labels: np.ndarray) -> float:
    """Plug-in entropy of the label counts, in bits."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mutual_information_bits(cells: np.ndarray, labels: np.ndarray) -> float:
    """Plug-in mutual information I(cells; labels) from the joint counts, in bits (sklearn gives nats)."""
    from sklearn.metrics import mutual_info_score

    return max(0.0, float(mutual_info_score(labels, cells)) / math.log(2))


def rho_from_cells(cells: np.ndarray, labels: np.ndarray, k: int) -> float:
    """I(cells; T) / min(H(T), log2 k), clipped to [0, 1] (dimensionless)."""
    h = entropy_bits(labels)
    if h <= 0:
        raise AnalysisError("labels: fewer than 2 classes present, ρ is undefined (H(T) = 0)")
    return float(min(1.0, max(0.0, mutual_information_bits(cells, labels) / min(h, math.log2(k)))))


# -- the quantiser ----------------------------------------------------------------------------
def kmeans_cells(features: np.ndarray, k: int, seed: int = 0, n_init: int = 3,
                 minibatch_above: int = 20_000) -> np.ndarray:
    """Cell index (0..k-1) of every row under the k-means (MSE-optimal k-level) quantiser of ``features``.

    ``KMeans`` (``n_init`` restarts, k-means++) for up to ``minibatch_above`` samples, else
    ``MiniBatchKMeans``; both with ``random_state=seed``. Float64 internally.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    x = np.asarray(features, dtype=np.float64)
    if len(x) > minibatch_above:
        km = MiniBatchKMeans(n_clusters=k, n_init=n_init, random_state=seed, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    with warnings.catch_warnings():  # fewer distinct points than k (bootstrap duplicates): fewer cells, fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        return km.fit_predict(x)


def check_inputs(features: np.ndarray, labels: np.ndarray, k: int) -> None:
    """:class:`AnalysisError` naming the input unless features are (n, d) and finite, labels (n,) with
    >= 2 classes, and 2 <= k < n."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise AnalysisError(f"k = {k!r}: the quantiser needs an integer k >= 2 levels")
    if features.ndim != 2 or len(features) == 0:
        raise AnalysisError(f"features: expected an (n_samples, dims) array, got shape {features.shape}")
    if labels.shape != (len(features),):
        raise AnalysisError(f"labels: expected shape ({len(features)},) to match the features, got {labels.shape}")
    if k >= len(features):
        raise AnalysisError(f"k = {k} must be smaller than the number of samples ({len(features)})")
    if len(np.unique(labels)) < 2:
        raise AnalysisError(f"labels: fewer than 2 classes present among the {len(labels)} samples; ρ is undefined")
    if not np.isfinite(features).all():
        raise AnalysisError("features: contain NaN or infinite values")


@dataclass(frozen=True)
class KMeansMIRho:
    """The project's ρ (module docstring): k-means cells, plug-in I(cells; T) / min(H(T), log2 k)."""

    name: str = DEFAULT_ESTIMATOR
    n_init: int = 3
    minibatch_above: int = 20_000

    def __call__(self, features: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> float:
        features, labels = np.asarray(features), np.asarray(labels)
        check_inputs(features, labels, k)
        cells = kmeans_cells(features, k, seed, self.n_init, self.minibatch_above)
        return rho_from_cells(cells, labels, k)


register_estimator(KMeansMIRho())


# -- PCA and the bootstrap ------------------------------------------------------------------
def pca_reduce(features: np.ndarray, dims: int | None, seed: int = 0) -> np.ndarray:
    """``features`` (n, d) projected on its first ``dims`` principal components (float32).

    ``dims`` is clamped to min(d, n); None, or a clamp to d itself, returns the features
    unchanged (as float32). Centred, not whitened, so MSE in the reduced space is MSE in
    the layer's space restricted to the kept subspace.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    if dims is None:
        return x
    if dims < 1:
        raise AnalysisError(f"pca = {dims}: must be >= 1 (or omitted for no PCA)")
    n_comp = min(int(dims), x.shape[1], x.shape[0])
    if n_comp >= x.shape[1]:
        return x
    return PCA(n_components=n_comp, random_state=seed, svd_solver="auto").fit_transform(x).astype(np.float32)


@dataclass(frozen=True)
class RhoEstimate:
    """A point estimate of ρ with its percentile bootstrap interval (NaN without bootstrap)."""

    rho: float
    ci_low: float
    ci_high: float
    replicates: np.ndarray = field(repr=False, compare=False)


def bootstrap_rho(features: np.ndarray, labels: np.ndarray, k: int,
                  estimator: RhoEstimator | Callable[..., float] | None = None, n_boot: int = 20, seed: int = 0,
                  confidence: float = 0.95, method: str = "percentile") -> RhoEstimate:
    """ρ on all samples plus a bootstrap ``confidence`` interval over ``n_boot`` resamples.

    Each replicate resamples the samples with replacement (:func:`bootstrap_indices`) and refits
    the quantiser; a replicate with a single class is NaN and ignored. ``method``:
    ``"percentile"`` (the replicates' quantiles) or ``"basic"`` (2ρ̂ - upper, 2ρ̂ - lower
    quantile, clipped to [0, 1]). Resampling with replacement duplicates samples, which
    raises the plug-in MI of the replicates (more so for large k / n), so the percentile
    interval can lie above ρ̂; the basic interval corrects for that shift.
    """
    if method not in CI_METHODS:
        raise AnalysisError(f"ci method {method!r}: expected one of {list(CI_METHODS)}")
    estimator = estimator or get_estimator(DEFAULT_ESTIMATOR)
    features, labels = np.asarray(features), np.asarray(labels)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise AnalysisError(f"bootstrap = {n_boot!r}: must be an integer >= 0")
    if not 0 < confidence < 1:
        raise AnalysisError(f"confidence = {confidence!r}: must be in (0, 1)")
    point = float(estimator(features, labels, k, seed=seed))
    reps = np.full(n_boot, np.nan)
    for b, idx in enumerate(bootstrap_indices(len(features), n_boot, seed)):
        if len(np.unique(labels[idx])) >= 2:
            reps[b] = float(estimator(features[idx], labels[idx], k, seed=seed))
    if np.isfinite(reps).any():
        alpha = (1 - confidence) / 2
        low, high = (float(v) for v in np.nanquantile(reps, [alpha, 1 - alpha]))
        if method == "basic":
            low, high = max(0.0, 2 * point - high), min(1.0, 2 * point - low)
    else:
        low = high = float("nan")
    return RhoEstimate(point, low, high, reps)

