"""Build and safely load CompressAI image-compression models (weights-only loads).

Two sources, one result (a CompressAI ``CompressionModel`` in eval mode, its entropy coders'
tables rebuilt by ``update(force=True)``): :func:`load_compressai_zoo` (an official
``compressai.zoo`` file, hash-checked, downloaded only when asked) and
:func:`load_checkpoint_model` (any CompressAI checkpoint of a named architecture, e.g. the
project zoo's). A checkpoint of another architecture is refused with the mismatched keys listed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from vcm_plugin.errors import TaskModelError
from vcm_plugin.hashing import file_sha256, name_hash_prefix
from vcm_plugin.weights import find_weights, hub_checkpoint_dir, load_state_dict_safely

#: entropy-coder tables whose shapes depend on the trained model (not architecture keys)
_TABLE_SUFFIXES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


class LearnedModelError(TaskModelError):
    """A learned codec model cannot be built or loaded (names the model and the file)."""


def import_compressai() -> None:
    """Import compressai (quietly: its import triggers a torch.jit deprecation warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import compressai.models  # noqa: F401
        import compressai.zoo  # noqa: F401


def architecture_class(name: str) -> type:
    """The class of CompressAI architecture ``name`` (zoo spelling, e.g. ``bmshj2018-hyperprior``); the error lists
    every valid name."""
    import_compressai()
    from compressai.zoo.image import model_architectures

    if name not in model_architectures:
        raise LearnedModelError(f"unknown CompressAI architecture {name!r}; valid: {sorted(model_architectures)}")
    return model_architectures[name]


def build_model(architecture: str, **arch_params: Any) -> Any:
    """A fresh (untrained) model of ``architecture`` with constructor parameters (e.g. N, M)."""
    cls = architecture_class(architecture)
    try:
        return cls(**arch_params)
    except TypeError as exc:
        raise LearnedModelError(f"architecture {architecture!r}: bad parameters {arch_params}: {exc}") from exc


def check_architecture(state: dict[str, Any], architecture: str, source: str) -> None:
    """Raise :class:`LearnedModelError` listing missing/unexpected keys if ``state`` is not ``architecture``."""
    import inspect

    cls = architecture_class(architecture)
    probe = cls(**{k: 8 for k in ("N", "M") if k in inspect.signature(cls.__init__).parameters})  # small sizes
    expected = {k for k in probe.state_dict() if not k.endswith(_TABLE_SUFFIXES)}
    got = {k for k in state if not k.endswith(_TABLE_SUFFIXES)}
    # CompressAI renamed some entropy-bottleneck keys over versions; compare after the zoo's own renaming
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" ... ({len(keys)} in all)" if len(keys) > 6 else "") if keys else "none"

        raise LearnedModelError(f"checkpoint {source} is not a {architecture!r} model: missing keys: "
                                f"{show(missing)}; unexpected keys: {show(unexpected)}")


#: tensors never stored as float16: the entropy models' likelihood bound (1e-9 underflows to 0,
#: which lets a likelihood reach 0 and the rate become infinite in training) and the scale table
KEEP_FLOAT32 = ("scale_table", ".bound")
#: the lower bound of CompressAI's entropy models' likelihoods (their ``likelihood_bound`` default)
LIKELIHOOD_BOUND = 1e-9


def with_default_bounds(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """``state`` with ``model``'s own LowerBound constants (``*.bound``): float16 exports stored 1e-9 as 0."""
    own = model.state_dict()
    return {k: (own[k] if k.endswith(".bound") and k in own else v) for k, v in state.items()}


def model_from_state(state: dict[str, Any], architecture: str, source: str) -> Any:
    """Build ``architecture`` from a state_dict (sizes from the tensors), eval mode, tables updated."""
    import_compressai()
    from compressai.zoo.pretrained import load_pretrained

    state = load_pretrained(dict(state))  # renames keys of older CompressAI checkpoints
    check_architecture(state, architecture, source)
    cls = architecture_class(architecture)
    try:
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}  # fp16 exports
        model = cls.from_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise LearnedModelError(f"checkpoint {source} does not fit architecture {architecture!r}: {first}") from exc
    model.eval()
    model.update(force=True)
    return model


def load_checkpoint_model(path: str | os.PathLike[str], architecture: str,
                          search_path: Sequence[str] | None = None) -> tuple[Any, str]:
    """Load a CompressAI checkpoint file (weights-only; a state_dict, or a dict with ``state_dict`` as CompressAI's
    training example saves; sizes such as N, M read from the tensors); returns (model, the file's SHA-256)."""
    found = find_weights(path, search_path)
    return model_from_state(load_state_dict_safely(found), architecture, repr(str(found))), file_sha256(found)


def zoo_checkpoint_url(architecture: str, metric: str, quality: int) -> str:
    """The official download URL of a ``compressai.zoo`` checkpoint; errors list what exists."""
    import_compressai()
    from compressai.zoo.image import model_urls

    try:
        return model_urls[architecture][metric][quality]
    except KeyError:
        have = {a: {m: sorted(q) for m, q in ms.items()} for a, ms in model_urls.items()}
        raise LearnedModelError(f"compressai.zoo has no pretrained {architecture!r} for metric {metric!r} at "
                                f"quality {quality}; available: {have}") from None


def load_compressai_zoo(architecture: str, metric: str, quality: int, search_path: Sequence[str] | None = None,
                        download: bool = False) -> tuple[Any, str]:
    """A pretrained ``compressai.zoo`` model; returns (model, the file's SHA-256).

    The file is found by its official name in ``search_path``, ``$VCM_WEIGHTS``, the
    user cache and torch.hub's cache; with ``download=True`` a missing file is fetched
    by torch.hub (which checks the hash prefix); the SHA-256 prefix in the name is checked here too (torch.hub
    does not check a cached file). Offline, a missing file raises
    :class:`~vcm_plugin.tasks.base.WeightsNotFoundError` naming it and every folder.
    """
    url = zoo_checkpoint_url(architecture, metric, quality)
    name = url.rsplit("/", 1)[-1]
    folders = [*(search_path or []), str(hub_checkpoint_dir())]
    try:
        path = find_weights(name, folders)
    except TaskModelError:
        if not download:
            raise
        import torch

        torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
        path = hub_checkpoint_dir() / name
    sha = file_sha256(path)
    prefix = name_hash_prefix(name)
    if prefix and not sha.startswith(prefix):
        raise LearnedModelError(f"compressai checkpoint {str(path)!r} has SHA-256 {sha[:12]}..., but its name says "
                                f"{prefix}: the file is corrupt or not the official one")
    return model_from_state(load_state_dict_safely(path), architecture, repr(str(path))), sha


def likelihood_bits(likelihoods: Any) -> float:
    """The entropy model's estimate of a stream's size, in bits: -sum log2 of every likelihood.

    ``likelihoods``: the ``"likelihoods"`` of a CompressAI forward pass (name -> tensor), as
    CompressAI's ``compute_bpp`` uses them. An estimate, never the rate (the real stream adds
    the rANS coder's overhead and the headers). Likelihoods are bounded below by
    :data:`LIKELIHOOD_BOUND`, CompressAI's default, which float16 exports store as 0 (see
    :data:`KEEP_FLOAT32`): one likelihood of 0 would make the estimate infinite.
    """
    import math

    import torch

    return float(sum(torch.log(t.double().clamp(min=LIKELIHOOD_BOUND)).sum() for t in likelihoods.values())
                 / -math.log(2))
