#!/usr/bin/env python3
"""`make bench`: every stack under the same load, side by side, in one run; what it measures
and how: harness/bench.py (`--help` lists the options)."""

import sys

from harness.bench import main

if __name__ == "__main__":
    sys.exit(main())
