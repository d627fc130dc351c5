"""Imports the built-in codec modules so that their ``@register_codec`` runs."""

from vcm_plugin.codecs import (  # noqa: F401
    av1,
    compressai_codec,
    hevc,
    jpeg,
    jxl,
    vtm,
    vvc,
    webp,
)
