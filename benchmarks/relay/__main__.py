"""``python -m benchmarks.relay``: run the relay benchmark."""

from __future__ import annotations

import sys

from benchmarks.relay.bench import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
