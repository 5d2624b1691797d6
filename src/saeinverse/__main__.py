"""``python -m saeinverse``: the CLI; with no arguments it runs the default experiment."""

import sys

from saeinverse.cli import main

sys.exit(main())
