"""``python -m asp_tune``: the ``asp-tune`` command line."""

import sys

from asp_tune.cli import main

sys.exit(main())
