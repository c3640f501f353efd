"""Run the dead-letter CLI: `python -m stream.deadletters summary|export|redrive ...`."""

import sys

from stream.deadletters.cli import main

sys.exit(main())
