"""``python -m interrupt_pool``: the ``pool`` command."""

import sys

from ._cli import main

sys.exit(main())
