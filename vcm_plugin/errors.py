"""The exception hierarchy of vcm-plugin.

Every error raised on a bad input derives from :class:`VcmError` and names the
offending input (file, codec, image id, config key) in its message, so the CLI can
print it as one line without a traceback.
"""

from __future__ import annotations


class VcmError(Exception):
    """Base class of every error vcm-plugin raises for a bad input or environment."""


class ImageReadError(VcmError, ValueError):
    """An image file could not be read or converted to 8-bit RGB."""


class InvalidImageError(VcmError, ValueError):
    """An in-memory image is not an (H, W, 3) uint8 RGB array."""


class UnknownCodecError(VcmError, KeyError):
    """No codec is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class CodecUnavailableError(VcmError, RuntimeError):
    """A codec is registered but cannot run here (missing binary, encoder or library)."""


class QualityError(VcmError, ValueError):
    """A quality parameter is outside the codec's documented range."""


class EncodeError(VcmError, RuntimeError):
    """A codec failed to encode an image."""


class DecodeError(VcmError, RuntimeError):
    """A bitstream could not be decoded (corrupt, truncated, or for another codec)."""


class BitstreamFormatError(DecodeError):
    """A serialized bitstream file is not in the vcm-plugin format or is damaged."""


class BDRateError(VcmError, ValueError):
    """Two rate-metric curves cannot give a meaningful Bjontegaard delta."""


class InputError(VcmError, ValueError):
    """A bad input that no more specific class describes (a command-line argument, a config's key)."""


class TaskModelError(VcmError, RuntimeError):
    """A task model cannot be built, loaded or run (names the model and the file).

    Also raised for a learned codec's or a task codec's checkpoint that cannot be found or
    loaded; :mod:`vcm_plugin.tasks.base` re-exports it.
    """


class WeightsNotFoundError(TaskModelError, FileNotFoundError):
    """A weights file is missing; the message names the file and every place searched."""
