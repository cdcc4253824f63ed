"""`python -m fqlower.cli`: the fqlower command."""

import sys

from fqlower.cli.parser import main

sys.exit(main())
