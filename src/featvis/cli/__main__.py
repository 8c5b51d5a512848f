"""``python -m featvis.cli``: the command line, as ``featvis`` and ``python -m featvis``."""

import sys

from . import main

sys.exit(main())
