"""`python -m labctl` is what `./lab` runs."""

import sys

from labctl.cli import main

sys.exit(main())
