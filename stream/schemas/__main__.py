"""Run the schema listing: `python -m stream.schemas [--json]`."""

import sys

from stream.schemas.listing import main

sys.exit(main())
