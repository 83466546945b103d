"""`havre-singleuser` (havre/notebook/singleuser.py): JupyterHub's single-user modules without
the hub's database layer, and with the same behaviour.

Each case runs in a fresh interpreter (what is imported is process state). The modules are the
ones JupyterHub's single-user server imports from JupyterHub itself, read from the installed
`jupyterhub/singleuser/` sources, so a JupyterHub upgrade that adds one is covered. (The full
server, `jupyterhub.singleuser.extension` with Jupyter Server, is checked in the built notebook
image: tests/integration/test_notebook_image.py, and run by every spawn test.)

* Lean: none of SQLAlchemy, Alembic, `jupyterhub.orm` or the hub's handlers gets imported, and
  no stand-in is left in `sys.modules`. Control: the same imports without the shim load all of
  them (so the probe can see them).
* Same behaviour: a real Tornado server logging with JupyterHub's `log_request` writes the same
  log lines and the same Prometheus samples, lean or not.
* A path thought unreachable still works: reading a real name through a stand-in imports the
  real module, says so on standard error, and answers with the real object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from havre.notebook import singleuser

pytest.importorskip("jupyterhub", reason="JupyterHub is not installed in this environment")

ROOT = Path(__file__).resolve().parents[2]

#: The JupyterHub modules the single-user server imports at module level (the extension, the
#: older app's mixins, the package), read from their sources in the subprocess.
MODULES_OF_JUPYTERHUB = r"""
import ast, importlib.util, pathlib
def jupyterhub_imports():
    folder = pathlib.Path(importlib.util.find_spec("jupyterhub").origin).parent / "singleuser"
    names = set()
    for source in ("extension.py", "mixins.py", "__init__.py", "app.py"):
        tree = ast.parse((folder / source).read_text())
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and (node.module or "").startswith("jupyterhub"):
                    names.add(node.module)
                elif node.level == 1:
                    names.add("jupyterhub.singleuser." + node.module)
                elif node.level == 2:
                    names.add("jupyterhub." + node.module)
    # jupyterhub.singleuser itself needs Jupyter Server (not in this environment): the image
    # check imports it
    return sorted(n for n in names if not n.startswith("jupyterhub.singleuser"))
"""

PRELUDE = (
    MODULES_OF_JUPYTERHUB
    + r"""
import importlib, json, sys
from havre.notebook import singleuser
lean = sys.argv[1] == "lean"
modules = jupyterhub_imports()
def imported(prefix):
    return any(k == prefix or k.startswith(prefix + ".") for k in sys.modules)
if lean:
    with singleuser.lean_imports():
        for name in modules:
            importlib.import_module(name)
else:
    for name in modules:
        importlib.import_module(name)
"""
)


def run(script: str, mode: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + script, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


IMPORTS = r"""
print(json.dumps({
    "modules": modules,
    "kept_out_loaded": [m for m in singleuser.KEPT_OUT if imported(m)],
    "stand_ins_left": [k for k, v in sys.modules.items() if isinstance(v, singleuser._StandIn)],
    "used": singleuser.stand_ins_used(),
}))
"""


def test_the_single_user_modules_import_without_the_database_layer():
    lean, stderr = run(IMPORTS, "lean")
    plain, _ = run(IMPORTS, "plain")
    # what is imported: the modules that reach the ORM are among them
    assert {"jupyterhub.log", "jupyterhub.services.auth", "jupyterhub.utils"} <= set(
        lean["modules"]
    )
    assert lean["kept_out_loaded"] == []
    assert lean["stand_ins_left"] == []
    assert lean["used"] == [] and "used after all" not in stderr
    # control: without the shim the same imports load every one of them
    assert plain["kept_out_loaded"] == list(singleuser.KEPT_OUT)


#: A real Tornado server on loopback, logging with JupyterHub's log_request (as the single-user
#: extension does): three requests (a page, a static file, a missing route), then the log lines
#: (timings blanked) and the Prometheus samples JupyterHub's metrics recorded.
LOG_REQUEST = r"""
import logging, re, tempfile, os
from tornado import httpclient, ioloop, web
from prometheus_client import REGISTRY
from jupyterhub.log import log_request

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append([record.levelname, re.sub(r"[0-9.]+ms", "Tms", record.getMessage())])
access = logging.getLogger("tornado.access")
access.setLevel(logging.DEBUG)
access.addHandler(Keep())

class Page(web.RequestHandler):
    def get(self):
        self.write("hello")

static = tempfile.mkdtemp()
with open(os.path.join(static, "a.txt"), "w") as f:
    f.write("a")

async def go():
    app = web.Application(
        [(r"/page", Page), (r"/static/(.*)", web.StaticFileHandler, {"path": static})],
        log_function=log_request,
    )
    server = app.listen(0, address="127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    client = httpclient.AsyncHTTPClient()
    for path in ("/page", "/static/a.txt", "/missing"):
        await client.fetch(f"http://127.0.0.1:{port}{path}", raise_error=False)
    server.stop()

ioloop.IOLoop.current().run_sync(go)
samples = sorted(
    [s.labels["handler"], s.labels["code"], s.labels["method"], s.value]
    for metric in REGISTRY.collect() if metric.name == "jupyterhub_request_duration_seconds"
    for s in metric.samples if s.name.endswith("_count")
)
print(json.dumps({"lines": lines, "samples": samples,
                  "kept_out_loaded": [m for m in singleuser.KEPT_OUT if imported(m)]}))
"""


def test_request_logging_and_metrics_are_the_same_lean_or_not():
    lean, _ = run(LOG_REQUEST, "lean")
    plain, _ = run(LOG_REQUEST, "plain")
    assert lean["kept_out_loaded"] == []  # serving requests did not need them either
    assert len(lean["lines"]) == 3 and len(lean["samples"]) == 3
    # the static file logs at debug level (the isinstance check with the stand-in class), the
    # missing route as a warning: as JupyterHub's own
    assert [level for level, _ in lean["lines"]] == ["INFO", "DEBUG", "WARNING"]
    assert (lean["lines"], lean["samples"]) == (plain["lines"], plain["samples"])
    assert plain["kept_out_loaded"] == list(singleuser.KEPT_OUT)  # control


READ_THROUGH = r"""
import jupyterhub.scopes
user = jupyterhub.scopes.orm.User  # a name the stand-in does not give
import jupyterhub.orm, sqlalchemy, sqlalchemy.exc
print(json.dumps({
    "real_class": user is jupyterhub.orm.User,
    "real_sqlalchemy": hasattr(sqlalchemy, "__version__"),
    "real_error": sqlalchemy.exc.SQLAlchemyError is not singleuser.SQLAlchemyError,
    "used": singleuser.stand_ins_used(),
}))
"""


def test_a_name_read_through_a_stand_in_comes_from_the_real_module():
    lean, stderr = run(READ_THROUGH, "lean")
    assert lean == {
        "real_class": True,
        "real_sqlalchemy": True,
        "real_error": True,
        "used": ["jupyterhub.orm.User"],
    }
    assert "havre-singleuser: jupyterhub.orm.User was used after all" in stderr


@pytest.mark.parametrize(
    ("value", "lean"),
    [(None, True), ("1", True), ("yes", True), ("0", False), ("off", False)],
)
def test_lean_is_the_default_and_can_be_turned_off(value, lean):
    environ = {} if value is None else {"HAVRE_SINGLEUSER_LEAN": value}
    assert singleuser.lean_requested(environ) is lean


def test_a_bad_switch_value_says_what_to_set():
    with pytest.raises(SystemExit, match="HAVRE_SINGLEUSER_LEAN is 'maybe'; set it to 1"):
        singleuser.lean_requested({"HAVRE_SINGLEUSER_LEAN": "maybe"})


def test_the_researcher_distribution_ships_the_entry_point():
    # the notebook image runs `havre-singleuser` (images/notebook/Dockerfile), a console script
    # of the researcher distribution pointing at this module's main
    text = (ROOT / "images/researcher/pyproject.toml").read_text()
    assert 'havre-singleuser = "havre.notebook.singleuser:main"' in text
    assert '"havre.notebook"' in text
    assert 'CMD ["havre-singleuser"]' in (ROOT / "images/notebook/Dockerfile").read_text()
