"""`python -m {{ cookiecutter.package_name }}` runs the same CLI as the console script."""

import sys

from .cli import main

sys.exit(main())
