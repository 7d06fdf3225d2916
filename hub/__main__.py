"""`python -m hub` is the same as the `voltwatch` console script."""

import sys

from .cli import main

sys.exit(main())
