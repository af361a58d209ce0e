"""`python -m edge_runtime`: see edge_runtime/cli/main.py for the commands."""

import sys

from edge_runtime.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
