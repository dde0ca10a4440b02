"""`python -m harness` is the `harness` command (simulator processes are started this way)."""

import sys

from harness.cli import main

sys.exit(main())
