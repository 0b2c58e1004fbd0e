"""Allows ``python -m magtape``."""

import sys

from magtape.cli import main

sys.exit(main())
