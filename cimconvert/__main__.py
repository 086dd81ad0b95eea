"""``python -m cimconvert``: the same as the ``cimconvert`` command."""

import sys

from .cli import main

sys.exit(main())
