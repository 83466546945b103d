"""The file kinds are tabled once (egress.files.kinds) and every reader uses that table."""

import pkgutil
from importlib import import_module

import egress.files
import egress.files.checks
import egress.files.notebooks
import egress.files.render
import egress.operations.files
from egress.files import kinds as file_kinds
from egress.files.kinds import (
    ALLOWED,
    CONTENT_TYPES,
    EXTENSIONS,
    LABELS,
    MEDIA_TYPES,
    SCRIPT_MIMES,
    FileKind,
    extensions_of,
)

FILES_MODULES = [
    import_module(f"egress.files.{info.name}")
    for info in pkgutil.iter_modules(egress.files.__path__)
]


def test_every_reader_uses_the_one_table():
    assert egress.files.checks.FileKind is FileKind
    assert egress.files.checks.EXTENSIONS is EXTENSIONS
    assert egress.files.checks.LABELS is LABELS
    assert egress.files.checks.ALLOWED is ALLOWED
    assert egress.files.checks.SCRIPT_MIMES is SCRIPT_MIMES
    assert egress.files.notebooks.SCRIPT_MIMES is SCRIPT_MIMES
    assert egress.files.render.CONTENT_TYPES is CONTENT_TYPES
    assert egress.operations.files.MEDIA_TYPES is MEDIA_TYPES


def test_no_other_module_tables_kinds_or_script_types():
    """One table: no module of egress.files but kinds defines a list of script types,
    extensions or media types of its own (the notebook module's lists of what it scans and
    what it shows are the only other MIME lists, and they name no script type)."""
    assert len(FILES_MODULES) > 5
    for module in FILES_MODULES:
        if module is file_kinds:
            continue
        own = [
            n
            for n, v in vars(module).items()
            if n.endswith(("_MIMES", "_EXTENSIONS", "_TYPES"))
            and getattr(v, "__module__", None) is None
            and v is not SCRIPT_MIMES
            and v is not CONTENT_TYPES
        ]
        assert set(own) <= {"_MARKUP_MIMES", "_OUTPUT_MIMES"}, (module.__name__, own)
    assert not egress.files.notebooks._OUTPUT_MIMES & SCRIPT_MIMES


def test_every_kind_has_a_label_media_types_and_an_extension():
    for kind in FileKind:
        assert LABELS[kind] and MEDIA_TYPES[kind] and CONTENT_TYPES[kind]
        assert extensions_of(kind), kind
        for ext in extensions_of(kind):
            assert f".{ext}" in ALLOWED
    assert set(EXTENSIONS.values()) == set(FileKind)
    assert extensions_of(FileKind.JPEG) == ("jpg", "jpeg")


def test_the_script_list_is_the_stricter_one():
    assert {
        "application/javascript",
        "text/javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/x-javascript",
    } <= SCRIPT_MIMES
    assert file_kinds.__doc__
