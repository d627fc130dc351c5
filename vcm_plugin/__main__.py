"""``python -m vcm_plugin`` runs the ``vcm`` command line."""

import sys

from vcm_plugin.cli import main

sys.exit(main())
