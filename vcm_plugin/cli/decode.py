"""``vcm decode``: decode a .vcmb bitstream file (the file names its codec) to an image."""

from __future__ import annotations

import argparse

from vcm_plugin.cli.common import CLIError, check_output_file, parse_params, read_file
from vcm_plugin.errors import VcmError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm decode``."""
    p = sub.add_parser("decode", help="decode a .vcmb bitstream file (the file names its codec) to an image")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="codec parameter (repeatable); the file stores those used at encoding (format version 2) "
                        "and they are used; a --param contradicting a stored one is an error. Needed only for "
                        "version-1 files made with non-default parameters (e.g. matrix=bt601)")
    p.add_argument("--reference", help="original image: also print PSNR-Y and PSNR-RGB")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists (never an input)")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Decode ``args.input`` to ``args.output`` (and compare with ``--reference``)."""
    from vcm_plugin.codecs.base import Bitstream
    from vcm_plugin.codecs.registry import codec_names, get_codec, get_codec_class
    from vcm_plugin.errors import UnknownCodecError
    from vcm_plugin.images.io import write_image

    check_output_file(args.output, {"input bitstream": args.input, "--reference image": args.reference}, args.force)
    given = parse_params(args.param)
    bitstream = Bitstream.from_bytes(read_file(args.input), source=args.input)
    try:
        get_codec_class(bitstream.codec)
    except UnknownCodecError:
        raise CLIError(f"{args.input} was made by codec {bitstream.codec!r}, which is not installed here "
                       f"(installed: {', '.join(codec_names())})") from None
    stored = bitstream.params or {}
    for key, value in given.items():
        if key in stored and stored[key] != value:
            raise CLIError(f"--param {key}={value!r} contradicts {key}={stored[key]!r} stored in {args.input} "
                           f"(the parameters the stream was encoded with); leave --param {key} out")
    try:
        codec = get_codec(bitstream.codec, **{**stored, **given})
    except VcmError as exc:
        if not stored:
            raise
        raise CLIError(f"{args.input}: cannot build codec {bitstream.codec!r} with the parameters stored in the "
                       f"file: {exc}") from exc
    image = codec.decode(bitstream)
    write_image(args.output, image)
    print(f"{args.input} -> {args.output}: codec {bitstream.codec}, {bitstream.width}x{bitstream.height}, "
          f"{bitstream.bpp:.6f} bpp")
    if args.reference:
        from vcm_plugin.images.io import read_image
        from vcm_plugin.images.metrics import psnr_rgb, psnr_y

        reference = read_image(args.reference)
        if reference.shape != image.shape:
            raise CLIError(f"--reference {args.reference}: size {reference.shape[1]}x{reference.shape[0]} differs "
                           f"from the decoded {image.shape[1]}x{image.shape[0]}")
        print(f"PSNR-Y {psnr_y(reference, image):.3f} dB, PSNR-RGB {psnr_rgb(reference, image):.3f} dB")
    return 0
