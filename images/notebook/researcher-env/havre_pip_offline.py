"""Havre: ``pip install`` in the enclave fails at once, with a sentence that says why.

The enclave has no network, so a package index can't be reached: pip used to wait about 70 s
on DNS retries and then claim the package does not exist. ``havre-pip-offline.pth`` (in the
environment's site-packages) calls :func:`install` at every start of Python; it patches pip's
entry point (``pip._internal.cli.main.main``, used by ``pip``, ``python -m pip`` and the
``%pip`` magic alike) when pip is imported, and nothing else. A command that would need an
index (install, download, wheel, index, lock, search) stops with :data:`MESSAGE` and exit
status 1, unless ``--no-index`` is given (installing a local wheel, which needs no network).
``pip list``, ``pip show`` and ``pip freeze`` work as usual. The environment's ``pip.conf``
also sets ``no-index``, so pip never waits on the network even if this hook is bypassed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

#: the pip commands that need a package index
NETWORK_COMMANDS = frozenset({"install", "download", "wheel", "index", "lock", "search"})

MESSAGE = """\
pip can't download packages here: a Havre enclave has no network, so no package index can be
reached (nothing leaves the enclave, and nothing comes in except through its administrators).
To see the packages that are installed, run `pip list` (or `%pip list` in a notebook).
To ask for another package, write to your project's administrator with the package's name,
version and why you need it: they add it to the notebook image for everyone (see "Packages"
in the researcher guide, docs/researcher.md).
"""

_TARGET = "pip._internal.cli.main"


def pip_command(argv: Sequence[str]) -> str | None:
    """The pip command in ``argv`` (the first word that is not an option), if any."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def refuses(argv: Sequence[str]) -> bool:
    """Whether this pip command line needs the network (and so is refused at once)."""
    return pip_command(argv) in NETWORK_COMMANDS and "--no-index" not in argv


def guard(main: Callable[..., int]) -> Callable[..., int]:
    """pip's ``main``, refusing the commands that need a package index."""

    def guarded_main(args: list[str] | None = None) -> int:
        argv = sys.argv[1:] if args is None else list(args)
        if refuses(argv):
            sys.stderr.write("ERROR: " + MESSAGE)
            sys.stderr.flush()
            return 1
        return main(args)

    guarded_main.havre_offline = True  # type: ignore[attr-defined]
    return guarded_main


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        main = getattr(module, "main", None)
        if callable(main) and not getattr(main, "havre_offline", False):
            module.main = guard(main)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Patch pip's entry point when (and if) this Python process imports it."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
