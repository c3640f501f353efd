"""Run the consent lookup CLI: `python -m stream.lookup --domain D --user U`."""

import sys

from stream.lookup.cli import main

sys.exit(main())
