"""``python -m relay``: run a relay server (see :mod:`relay.cli`)."""

from __future__ import annotations

import sys

from relay.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
