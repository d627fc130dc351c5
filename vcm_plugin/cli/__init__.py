"""The ``vcm`` command line: one module per subcommand, the shared helpers in :mod:`~vcm_plugin.cli.common`.

The top layer of the package: nothing but :mod:`vcm_plugin.__main__` imports it (``make lint``
checks this), and it holds every ``argparse`` use.
"""

from vcm_plugin.cli.main import main

__all__ = ["main"]
