"""``python -m framerpc`` runs the ``framerpc`` command."""

import sys

from .tools.cli import main

sys.exit(main())
