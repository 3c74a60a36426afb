"""``python -m stress``: the same as the ``stress`` command."""

import sys

from stress.cli import main

sys.exit(main())
