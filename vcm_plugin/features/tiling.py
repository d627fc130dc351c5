"""FCM-style packing of a feature tensor into one monochrome frame, and back.

A (C, h, w) float tensor is quantised to ``bits`` (10) bits with ONE min/max per tensor
(carried in the bitstream header as two float32), and its channels are tiled row-major
into a ``rows x cols`` grid (``cols = ceil(sqrt(C))``) of one frame of
``rows*h x cols*w`` samples; unused tiles hold mid-grey (``2**(bits-1)``), which costs a
picture codec almost nothing. This is the baseline of MPEG FCM's feature packing
(per-tensor linear quantisation, channel tiling); done by hand because no library
packs tensors into frames.

The FCM anchor's variant (:func:`pack` / :func:`unpack`) quantises every tensor over one
dataset-global range given by the configuration and packs all of them into ONE frame:
each tensor's tile grid is a block, blocks stacked top to bottom in order, left-aligned,
the frame as wide as the widest block (the rest mid-grey).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quantised:
    """Integer samples (C, h, w) uint16 and the float range they map back to."""

    samples: np.ndarray
    low: float
    high: float
    bits: int = 10


def quantise(tensor: np.ndarray, bits: int = 10, value_range: tuple[float, float] | None = None) -> Quantised:
    """Linear quantisation of ``tensor`` to ``bits`` bits over its own [min, max] (constant -> all zero), or over
    ``value_range`` (low, high) when given, values outside it clipped."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits {bits} must be 1..16")
    values = np.asarray(tensor, np.float32)
    if not np.isfinite(values).all():
        raise ValueError("feature tensor has non-finite values")
    if value_range is not None:
        low, high = float(value_range[0]), float(value_range[1])
        values = np.clip(values, low, high)
    else:
        low, high = float(values.min()), float(values.max())
    scale = (2**bits - 1) / (high - low) if high > low else 0.0
    samples = np.rint((values - low) * scale).astype(np.uint16)
    return Quantised(samples, low, high, bits)


def dequantise(q: Quantised) -> np.ndarray:
    """Back to float32 in [low, high]."""
    if q.high <= q.low:
        return np.full(q.samples.shape, q.low, np.float32)
    return (q.samples.astype(np.float32) * ((q.high - q.low) / (2**q.bits - 1)) + q.low).astype(np.float32)


def grid(channels: int) -> tuple[int, int]:
    """(rows, cols) of the channel tiling: ``cols = ceil(sqrt(C))``."""
    cols = max(1, math.ceil(math.sqrt(channels)))
    return math.ceil(channels / cols), cols


def tile(samples: np.ndarray, fill: int) -> np.ndarray:
    """(C, h, w) -> one (rows*h, cols*w) frame, channel k at row k // cols, column k % cols."""
    channels, h, w = samples.shape
    rows, cols = grid(channels)
    tiles = np.full((rows * cols, h, w), fill, samples.dtype)
    tiles[:channels] = samples
    return tiles.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def untile(frame: np.ndarray, channels: int, h: int, w: int) -> np.ndarray:
    """Inverse of :func:`tile`; the frame must be at least the tiled size (extra padding is ignored)."""
    rows, cols = grid(channels)
    if frame.shape[0] < rows * h or frame.shape[1] < cols * w:
        raise ValueError(f"frame {frame.shape} is smaller than {channels} tiles of {h}x{w} ({rows}x{cols} grid)")
    tiles = frame[:rows * h, :cols * w].reshape(rows, h, cols, w).transpose(0, 2, 1, 3)
    return tiles.reshape(rows * cols, h, w)[:channels].copy()


def block_size(shape: tuple[int, int, int]) -> tuple[int, int]:
    """(height, width) in samples of the tile grid of a (C, h, w) tensor."""
    channels, h, w = shape
    rows, cols = grid(channels)
    return rows * h, cols * w


def packed_size(shapes: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(height, width) of the frame :func:`pack` makes from tensors of ``shapes`` (C, h, w)."""
    sizes = [block_size(s) for s in shapes]
    return sum(h for h, _ in sizes), max(w for _, w in sizes)


def pack(tensors: list[np.ndarray], fill: int) -> np.ndarray:
    """(C, h, w) sample arrays -> one frame: each tensor's tile grid a block, stacked top to bottom, left-aligned."""
    height, width = packed_size([t.shape for t in tensors])
    frame = np.full((height, width), fill, tensors[0].dtype)
    top = 0
    for samples in tensors:
        block = tile(samples, fill)
        frame[top:top + block.shape[0], :block.shape[1]] = block
        top += block.shape[0]
    return frame


def unpack(frame: np.ndarray, shapes: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """Inverse of :func:`pack` for tensors of ``shapes``; the frame must be exactly :func:`packed_size`."""
    if tuple(frame.shape) != packed_size(shapes):
        raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} is not the {packed_size(shapes)[1]}x"
                         f"{packed_size(shapes)[0]} packing of tensors {shapes}")
    out, top = [], 0
    for shape in shapes:
        h, w = block_size(shape)
        out.append(untile(frame[top:top + h, :w], *shape))
        top += h
    return out
