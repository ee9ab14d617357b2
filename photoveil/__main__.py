"""``python -m photoveil ...``: the same as the ``photoveil`` command."""
import sys

from photoveil.cli import main

sys.exit(main())
