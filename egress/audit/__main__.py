"""``python -m egress.audit``: check and export an audit log (see :mod:`egress.audit.chain`)."""

import sys

from egress.audit.chain import main

sys.exit(main())
