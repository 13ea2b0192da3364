"""`python -m stegobench.cli ARGS`: the `stegobench` command without its console script (what subprocesses run)."""

import sys

from .main import main

sys.exit(main())
