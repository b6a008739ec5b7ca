"""``python -m lift_core``: the command-line interface (see lift_core.cli)."""

import sys

from lift_core.cli import main

sys.exit(main())
