"""`python -m services.cli ...`: the `clinai` command."""

import sys

from services.cli.app import main

sys.exit(main())
