"""``python -m minescan`` runs the command line."""

import sys

from minescan.cli import main

sys.exit(main())
