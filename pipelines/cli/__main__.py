"""``python -m pipelines.cli``: the same as the ``kfbatch`` console script."""

import sys

from pipelines.cli import main

sys.exit(main())
