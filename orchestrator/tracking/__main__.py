"""``python -m orchestrator.tracking replay SPOOL [--uri URI]`` (see :mod:`.replaying`)."""

import sys

from orchestrator.tracking.replaying import main

if __name__ == "__main__":
    sys.exit(main())
