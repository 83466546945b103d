"""Deprecated alias of :mod:`havre.safe`, kept for one release.

Researchers' notebooks written as ``import egress.safe as safe`` keep working: this module warns
once and makes ``egress.safe`` (and ``egress.safe.display``, ``.outputs``, ``.session``) the
very same module objects as ``havre.safe`` and its modules. Write ``import havre.safe as safe``.
"""

import sys
import warnings

import havre.safe
import havre.safe.display
import havre.safe.outputs
import havre.safe.session

warnings.warn(
    "egress.safe is now havre.safe: write `import havre.safe as safe` "
    "(the old name goes in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

for _name in ("display", "outputs", "session"):
    sys.modules[f"{__name__}.{_name}"] = getattr(havre.safe, _name)
sys.modules[__name__] = havre.safe
