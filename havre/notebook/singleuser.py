"""`havre-singleuser`: JupyterHub's single-user server, without the hub's database layer.

JupyterHub 6.1's single-user extension (`jupyterhub.singleuser.extension`) imports, at module
level, modules that reach the hub's own handlers and ORM: `jupyterhub.log` imports
`jupyterhub.handlers.pages` (for one `isinstance` check against the hub's health-check
handler), which imports `jupyterhub.handlers.base`, `jupyterhub.orm`, SQLAlchemy and Alembic;
`jupyterhub.utils` imports `sqlalchemy.exc` (for the hub's `catch_db_error` decorator);
`jupyterhub.scopes` and `jupyterhub.metrics` import `jupyterhub.orm` and `jupyterhub.roles`
(used only when a database session is passed in, or by the hub's periodic collector). A
single-user server executes none of those paths, yet importing them is about half of its
start-up CPU and 40 MiB of its resident memory (benchmarks/README.md).

This entry point imports JupyterHub's single-user modules with a stand-in in `sys.modules`
for each of `STAND_INS` only, then removes the stand-ins, and runs JupyterHub's own `main`:
the same extension, OAuth with the hub, activity reports, request logging and metrics, only
without those imports.

* A stand-in provides only the names bound at import time that a single-user server never
  reaches with one of its own objects: `HealthCheckHandler` (no single-user handler is the
  hub's health check, so the `isinstance` is false either way) and `SQLAlchemyError` (caught
  only around the hub's database calls).
* Any other attribute read from a stand-in (say `jupyterhub.scopes.orm.User`, if a code path
  thought unreachable does run) imports the real module there and then and answers from it,
  after one line on standard error naming what was used, so behaviour never changes, only
  the cost of that path (tests/unit/test_notebook_singleuser.py;
  tests/integration/test_notebook_image.py checks that a served Lab never printed it and has
  no SQLAlchemy in its memory).
* Once JupyterHub's modules are imported the stand-ins leave `sys.modules`, so a later
  `import sqlalchemy` (by anything in the server process) gets the real package.

`HAVRE_SINGLEUSER_LEAN=0` in the environment runs JupyterHub's `main` with the plain imports
(for comparisons: benchmarks/spawn_benchmark.py). docs/upstream/jupyterhub-singleuser-imports.md
is the change offered upstream that would make this module unnecessary.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class HealthCheckHandler:
    """Stands in for `jupyterhub.handlers.pages.HealthCheckHandler`, the hub's `/hub/health`.

    No handler of a single-user server is one, so `isinstance(handler, HealthCheckHandler)`
    in `jupyterhub.log.log_request` is false for all of them, as it is with the real class.
    """


class SQLAlchemyError(Exception):
    """Stands in for `sqlalchemy.exc.SQLAlchemyError`, which `jupyterhub.utils` catches only
    around the hub's database calls (`catch_db_error`); nothing in a single-user server raises
    it."""


#: module name -> the names it gives at import time; every other name loads the real module.
STAND_INS: dict[str, dict[str, object]] = {
    "jupyterhub.handlers": {},
    "jupyterhub.handlers.pages": {"HealthCheckHandler": HealthCheckHandler},
    "jupyterhub.orm": {},
    "jupyterhub.roles": {},
    "sqlalchemy": {},
    "sqlalchemy.exc": {"SQLAlchemyError": SQLAlchemyError},
}

#: What the stand-ins keep out of the process (checked by the tests, and by `lean_report`).
KEPT_OUT = ("sqlalchemy", "alembic", "jupyterhub.orm", "jupyterhub.handlers")

#: The modules whose import the stand-ins are for: JupyterHub's single-user server.
SINGLE_USER_MODULES = ("jupyterhub.singleuser", "jupyterhub.singleuser.extension")

_used: list[str] = []


class _StandIn(types.ModuleType):
    """A module in `sys.modules` during the import only; see the module's docstring."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):  # the import system's probes (__path__, __spec__, ...)
            raise AttributeError(name)
        real = _load_real(self.__name__)
        print(
            f"havre-singleuser: {self.__name__}.{name} was used after all: "
            f"imported the real {self.__name__}",
            file=sys.stderr,
            flush=True,
        )
        _used.append(f"{self.__name__}.{name}")
        return getattr(real, name)


def _load_real(name: str) -> types.ModuleType:
    """Import the real module `name`, first taking any stand-in for it (or for a package it
    is in) out of `sys.modules`."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if isinstance(sys.modules.get(prefix), _StandIn):
            del sys.modules[prefix]
    return importlib.import_module(name)


def stand_ins_used() -> list[str]:
    """The stand-in attributes read so far in this process (each one imported a real module);
    empty when the single-user server never needed what was left out."""
    return list(_used)


@contextmanager
def lean_imports() -> Iterator[None]:
    """Within the block, importing a module of `STAND_INS` that is not imported yet gives its
    stand-in; afterwards the stand-ins are out of `sys.modules` (modules imported in the block
    keep their reference to them)."""
    placed: dict[str, _StandIn] = {}
    for name, names in STAND_INS.items():
        if name in sys.modules:  # already really imported: nothing to save
            continue
        module = _StandIn(name, f"Havre's stand-in for {name} (havre.notebook.singleuser)")
        module.__dict__.update(names)
        placed[name] = module
        sys.modules[name] = module
    try:
        yield
    finally:
        for name, module in placed.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def import_single_user(lean: bool = True) -> Callable[..., object]:
    """Import JupyterHub's single-user server (with `lean_imports` unless `lean` is false)
    and return its `main`."""
    if lean:
        with lean_imports():
            for name in SINGLE_USER_MODULES:
                importlib.import_module(name)
    from jupyterhub.singleuser import main as upstream_main

    return upstream_main


def lean_requested(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment asks for the lean imports: yes unless HAVRE_SINGLEUSER_LEAN
    is 0 (or false, no, off)."""
    value = environ.get("HAVRE_SINGLEUSER_LEAN", "1").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SystemExit(
        f"havre-singleuser: HAVRE_SINGLEUSER_LEAN is {value!r}; set it to 1 (the default: "
        "without the hub's database layer) or 0 (JupyterHub's plain imports)."
    )


def main(argv: list[str] | None = None) -> object:
    """`havre-singleuser`: JupyterHub's single-user `main`, imported lean."""
    upstream_main = import_single_user(lean=lean_requested())
    return upstream_main(argv)


if __name__ == "__main__":
    sys.exit(main())
