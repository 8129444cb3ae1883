"""``python -m tracking``."""

import sys

from tracking.cli import main

if __name__ == "__main__":
    sys.exit(main())
