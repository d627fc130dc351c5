"""Decode one ``.vcmb`` file in a fresh process: the ``fresh-process decode`` check of :mod:`.codec`.

``python -m vcm_plugin.conformance.child STREAM.vcmb OUT.npz MODULE MACHINE_PARAMS_JSON`` imports
``MODULE`` (the codec class's module, so that a plug-in or test codec registers itself), builds the codec
named by the stream from the parameters stored in it plus the machine parameters (executables, threads,
search paths: not stored in streams), decodes and writes the output with
:func:`~vcm_plugin.conformance.codec.as_arrays` to ``OUT.npz``. Errors: one line on stderr, exit status 1.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    """Decode ``argv[0]`` to ``argv[1]`` (see the module docstring); the exit status."""
    from vcm_plugin.codecs.base import Bitstream
    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.conformance.codec import as_arrays

    stream_path, out_path, module, machine = argv
    if module != "__main__":
        importlib.import_module(module)
    bitstream = Bitstream.from_bytes(Path(stream_path).read_bytes(), source=stream_path)
    codec = get_codec(bitstream.codec, **{**(bitstream.params or {}), **json.loads(machine)})
    np.savez(out_path, **as_arrays(codec.decode(bitstream)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as exc:  # one line for the parent's report
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
