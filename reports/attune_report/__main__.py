"""Entry point of `python3 -m attune_report`; see attune_report/__init__.py for usage and formats."""
import sys

from .cli import main

sys.exit(main())
