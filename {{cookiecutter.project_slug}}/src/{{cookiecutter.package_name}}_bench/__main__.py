"""`python -m <package>_bench NAME`: the same as the `bench` command."""

import sys

from . import main

sys.exit(main(sys.argv[1:]))
