"""``python -m framerpc`` runs the ``framerpc`` command."""

import sys

from .cli import main

sys.exit(main())
