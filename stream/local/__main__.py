"""`python -m stream.local up|down|status`: the emulators in the background."""

import sys

from stream.local.environment import main

if __name__ == "__main__":
    sys.exit(main())
