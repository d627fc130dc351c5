"""Compatibility: the weights search path and loaders moved to :mod:`vcm_plugin.weights`.

They are not task-specific (learned codecs and the zoo use them too), so they sit at the
bottom of the layers; this module re-exports their public names for existing imports.
"""

from vcm_plugin.weights import (
    DEFAULT_CACHE,
    ENV_VAR,
    KNOWN_SHA256,
    NotWeightsOnlyError,
    file_sha256,
    find_weights,
    hub_checkpoint_dir,
    load_state_dict_safely,
    verify_sha256,
    weights_search_path,
)

__all__ = [
    "DEFAULT_CACHE", "ENV_VAR", "KNOWN_SHA256", "NotWeightsOnlyError", "file_sha256", "find_weights",
    "hub_checkpoint_dir", "load_state_dict_safely", "verify_sha256", "weights_search_path",
]
