"""``python -m stress``: the same as the ``stress`` command."""

import sys

from stress.cli.main import main

sys.exit(main())
