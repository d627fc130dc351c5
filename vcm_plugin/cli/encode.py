"""``vcm encode``: encode an image into a .vcmb bitstream file."""

from __future__ import annotations

import argparse

from vcm_plugin.cli.common import check_output_file, parse_params, parse_quality, write_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm encode``."""
    p = sub.add_parser("encode", help="encode an image into a .vcmb bitstream file")
    p.add_argument("--codec", required=True)
    p.add_argument("--quality", "-q", required=True, help="the codec's quality parameter (see `vcm codecs`)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="codec parameter (repeatable); stored in the .vcmb file for `vcm decode`")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists (never the input image)")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Encode ``args.input`` to ``args.output``."""
    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.images.io import read_image

    check_output_file(args.output, {"input image": args.input}, args.force)
    codec = get_codec(args.codec, **parse_params(args.param))
    bitstream = codec.encode(read_image(args.input), parse_quality(args.quality))
    write_file(args.output, bitstream.to_bytes())
    print(f"{args.input} -> {args.output}: codec {bitstream.codec}, {codec.quality_range.name} {bitstream.quality}, "
          f"{bitstream.width}x{bitstream.height}, {len(bitstream.data)} bytes = {bitstream.num_bits} bits, "
          f"{bitstream.bpp:.6f} bpp")
    return 0
