"""``import egress.safe`` (researchers' existing notebooks) still works for one release: it warns
and gives the very same modules as ``havre.safe``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

PROGRAM = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import egress.safe as safe
    from egress.safe.outputs import Output
    import egress.safe.session
import havre.safe
import havre.safe.outputs
import havre.safe.session
assert safe is havre.safe
assert Output is havre.safe.outputs.Output
assert egress.safe.session is havre.safe.session
assert safe.Session is havre.safe.Session
warned = [w for w in caught if issubclass(w.category, DeprecationWarning)]
assert len(warned) == 1, [str(w.message) for w in caught]
assert "havre.safe" in str(warned[0].message)
# the warning points at the notebook's import, not at the import machinery
assert warned[0].filename == "<string>", warned[0].filename
print("ok")
"""


def test_import_egress_safe_warns_and_is_havre_safe() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
