"""vcm-plugin: image coding for machines, with honest rates and standard anchors.

The public contract third-party codecs implement is importable from here:
:class:`Bitstream`, :class:`Codec`, :func:`get_codec`, :func:`available_codecs`,
:func:`register_codec`; plus :func:`read_image`, :func:`bd_rate` and :func:`bd_metric`.
"""

from vcm_plugin._version import __version__
from vcm_plugin.codecs import (
    Availability,
    Bitstream,
    Codec,
    QualityRange,
    available_codecs,
    get_codec,
    register_codec,
)
from vcm_plugin.errors import (
    BDRateError,
    BitstreamFormatError,
    CodecUnavailableError,
    DecodeError,
    EncodeError,
    ImageReadError,
    InvalidImageError,
    QualityError,
    UnknownCodecError,
    VcmError,
)
from vcm_plugin.evaluation.bd import bd_metric, bd_rate
from vcm_plugin.images.io import read_image, write_image

__all__ = [
    "Availability", "BDRateError", "Bitstream", "BitstreamFormatError", "Codec", "CodecUnavailableError",
    "DecodeError", "EncodeError", "ImageReadError", "InvalidImageError", "QualityError", "QualityRange",
    "UnknownCodecError", "VcmError", "__version__", "available_codecs", "bd_metric", "bd_rate", "get_codec",
    "read_image", "register_codec", "write_image",
]
