"""The file kinds are tabled once (egress.files.kinds) and every reader uses that table."""

import egress.files.checks
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


def test_every_reader_uses_the_one_table():
    assert egress.files.checks.FileKind is FileKind
    assert egress.files.checks.EXTENSIONS is EXTENSIONS
    assert egress.files.checks.LABELS is LABELS
    assert egress.files.checks.ALLOWED is ALLOWED
    assert egress.files.checks.SCRIPT_MIMES is SCRIPT_MIMES
    assert egress.files.render.CONTENT_TYPES is CONTENT_TYPES
    assert egress.files.render.SCRIPT_MIMES is SCRIPT_MIMES
    assert egress.operations.files.MEDIA_TYPES is MEDIA_TYPES
    for module in (egress.files.checks, egress.files.render):
        leftovers = [n for n in vars(module) if n.endswith(("_MIMES", "_EXTENSIONS"))]
        assert set(leftovers) <= {"SCRIPT_MIMES", "_MARKUP_MIMES", "_OUTPUT_MIMES"}, leftovers


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
