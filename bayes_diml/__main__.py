"""``python -m bayes_diml`` = the ``bayes-diml`` command."""

import sys

from .cli import main

sys.exit(main())
