"""Compatibility: the LEB128 varints and the byte reader moved to :mod:`vcm_plugin.varint`."""

from vcm_plugin.varint import ByteReader, encode_varint

__all__ = ["ByteReader", "encode_varint"]
