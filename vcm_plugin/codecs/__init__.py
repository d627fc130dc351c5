"""Codecs: the :class:`Codec` contract, the registry and the built-in codecs."""

from vcm_plugin.codecs.base import Availability, Bitstream, Codec, Quality, QualityRange
from vcm_plugin.codecs.registry import (
    ENTRY_POINT_GROUP,
    CodecInfo,
    available_codecs,
    codec_names,
    get_codec,
    get_codec_class,
    register_codec,
)

__all__ = [
    "ENTRY_POINT_GROUP", "Availability", "Bitstream", "Codec", "CodecInfo", "Quality", "QualityRange",
    "available_codecs", "codec_names", "get_codec", "get_codec_class", "register_codec",
]
