"""``python -m projects STEP``: the workflow's command line."""

import sys

from projects.cli import main

sys.exit(main())
