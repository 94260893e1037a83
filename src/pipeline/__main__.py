"""``python -m pipeline``: the same command-line interface as ``pipeline``."""

import sys

from pipeline.cli import main

sys.exit(main())
