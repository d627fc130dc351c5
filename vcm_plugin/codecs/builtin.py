"""Imports the built-in codec modules so that their ``@register_codec`` runs."""

from vcm_plugin.codecs import av1, compressai_codec, feature, hevc, jpeg, jxl, vtm, vvc, webp  # noqa: F401
