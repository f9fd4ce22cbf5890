"""``python -m chatd`` is the ``chatd`` command."""

import sys

from chatd.cli.main import main

sys.exit(main())
