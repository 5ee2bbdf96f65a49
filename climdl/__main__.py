"""``python -m climdl ...``: the ``climdl`` command (as ``torchrun -m climdl downscale ...``
launches it on each rank); the same as ``python -m climdl.cli``."""

import sys

from climdl.cli import main

if __name__ == "__main__":
    sys.exit(main())
