"""``python -m tabsynth``: the same as the ``tabsynth`` command."""

import sys

from tabsynth.cli import main

if __name__ == "__main__":
    sys.exit(main())
