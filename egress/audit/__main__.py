"""``python -m egress.audit``: check and export an audit log (see :mod:`egress.audit.cli`)."""

import sys

from egress.audit.cli import main

sys.exit(main())
