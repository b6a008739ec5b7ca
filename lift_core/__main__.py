"""``python -m lift_core``: the command-line interface (see lift_core.cli.main)."""

import sys

from lift_core.cli.main import main

sys.exit(main())
