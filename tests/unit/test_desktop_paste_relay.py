"""The desktop's RFB relay (images/desktop/rfb_relay.py): what it forwards to Xvnc (issue #17).

The relay sits between websockify and Xvnc in every desktop. Loaded here from the image's
folder by path (the image has no Havre package; the script is what runs there):

* each client message noVNC 1.3 sends passes byte for byte, however the stream is split;
  anything else (an unknown type, another protocol version or security type, an oversized
  field) closes the connection;
* SetEncodings loses the Extended Clipboard pseudo-encoding, and nothing else;
* a ClientCutText is forwarded only with paste on and when it is text within the limit
  (control: the same bytes with paste on are forwarded; with paste off, over the limit, with
  NUL or a control character, or as an extended-clipboard message they are dropped), and each
  leaves one audit line in the format of havre.enclave.logs, with the SHA-256, never the text;
* the relay itself, on real Unix sockets, forwards to a server and writes that line.

The live relay in the real image: tests/integration/test_desktop_hardening.py (paste off: the
refusal line and Xvnc's clipboard untouched; paste on: the text in Xvnc's clipboard) and
tests/e2e/test_desktop_session.py (the page's paste box, Ctrl+V through the canvas).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import random
import re
import struct
import sys
from pathlib import Path

import pytest

from havre.enclave import logs
from havre.enclave.config import DESKTOP_PASTE_MODES

REPO = Path(__file__).resolve().parents[2]
DESKTOP = REPO / "images" / "desktop"
RELAY_PATH = DESKTOP / "rfb_relay.py"
_spec = importlib.util.spec_from_file_location("havre_desktop_rfb_relay", RELAY_PATH)
assert _spec is not None and _spec.loader is not None
relay = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = relay
_spec.loader.exec_module(relay)

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"  # version, security None, ClientInit (shared)
EXTENDED_CLIPBOARD = 0xC0A1E5CE


def set_encodings(*codes: int) -> bytes:
    return struct.pack(f">BxH{len(codes)}I", 2, len(codes), *(c & 0xFFFFFFFF for c in codes))


def cut_text(text: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BxxxI", 6, len(text) if length is None else length) + text


#: what noVNC 1.3's core/rfb.js sends (RFB.messages), one of each
MESSAGES = {
    "SetPixelFormat": bytes([0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0]),
    "SetEncodings": set_encodings(1, 7, -260, 5, 2, 0, -23, -247, -223, -224, -258, -308, -309),
    "FramebufferUpdateRequest": struct.pack(">BBHHHH", 3, 1, 0, 0, 1280, 800),
    "KeyEvent": struct.pack(">BBxxI", 4, 1, 0xFFE3),
    "PointerEvent": struct.pack(">BBHH", 5, 1, 452, 393),
    "EnableContinuousUpdates": struct.pack(">BBHHHH", 150, 1, 0, 0, 1280, 800),
    "ClientFence": struct.pack(">BxxxIB", 248, 0x80000003, 5) + b"fence",
    "ClientFence (empty)": struct.pack(">BxxxIB", 248, 1, 0),
    "xvp": bytes([250, 0, 1, 2]),
    "SetDesktopSize": struct.pack(">BxHHBx", 251, 1400, 900, 1)
    + struct.pack(">IHHHHI", 0, 0, 0, 1400, 900, 0),
    "QEMUExtendedKeyEvent": struct.pack(">BBHII", 255, 0, 1, 0x61, 0x1E),
}


def splits(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random places (single bytes included)."""
    rng = random.Random(seed)
    parts, i = [], 0
    while i < len(data):
        n = rng.choice([1, 1, 2, 3, 7, 64])
        parts.append(data[i : i + n])
        i += n
    return parts


def run(stream, data: bytes, seed: int = 0) -> tuple[bytes, list]:
    out, pastes = b"", []
    for part in splits(data, seed):
        forwarded, seen = stream.feed(part)
        out += forwarded
        pastes += seen
    return out, pastes


@pytest.mark.parametrize("name", list(MESSAGES))
@pytest.mark.parametrize("paste", [False, True])
def test_each_message_novnc_sends_passes_byte_for_byte_however_split(name, paste):
    message = MESSAGES[name]
    # three times, between key events, each split differently (one byte at a time included)
    data = HANDSHAKE + message + MESSAGES["KeyEvent"] + message + message
    for seed in range(5):
        stream = relay.ClientStream(paste)
        out, pastes = run(stream, data, seed)
        assert out == data and pastes == []
    one_by_one = relay.ClientStream(paste)
    assert b"".join(one_by_one.feed(bytes([b]))[0] for b in data) == data


#: (name, bytes after the handshake, or the whole stream) -> the connection is closed
REFUSED = {
    "unknown type 1 (FixColourMapEntries, a server message)": b"\x01" + b"\x00" * 7,
    "unknown type 7": b"\x07" + b"\x00" * 7,
    "unknown type 127": b"\x7f" + b"\x00" * 7,
    "unknown type 249": b"\xf9" + b"\x00" * 7,
    "QEMU subtype 1 (audio)": bytes([255, 1, 0, 0]),
    "fence over 64 bytes": struct.pack(">BxxxIB", 248, 0, 65) + b"x" * 65,
    "2000 encodings": struct.pack(">BxH", 2, 2000),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_an_unknown_or_malformed_message_closes_the_connection(name):
    stream = relay.ClientStream(True)
    out, _ = stream.feed(HANDSHAKE + MESSAGES["KeyEvent"])
    assert out == HANDSHAKE + MESSAGES["KeyEvent"]  # control: what came before went through
    with pytest.raises(relay.ProtocolRefused):
        stream.feed(REFUSED[name])


@pytest.mark.parametrize(
    "start",
    [
        b"RFB 003.003\n",  # 3.3: the server chooses the security type; not what Xvnc offers
        b"RFB 004.001\n",
        b"GET / HTTP/1.1\r\n",
        b"RFB 003.008\n\x02",  # VNC authentication: the relay speaks None only
        b"RFB 003.008\n\x13",  # VeNCrypt
    ],
)
def test_another_version_or_security_type_closes_the_connection(start):
    with pytest.raises(relay.ProtocolRefused):
        relay.ClientStream(True).feed(start)
    # control: the expected handshake (3.8 and 3.7, security None) passes
    for version in (b"RFB 003.008\n", b"RFB 003.007\n"):
        assert relay.ClientStream(True).feed(version + b"\x01\x00") == (version + b"\x01\x00", [])


def test_set_encodings_loses_the_extended_clipboard_and_nothing_else():
    codes = [1, 7, -260, 0, -23, -224, -309, -312, -313, -307, EXTENDED_CLIPBOARD, -239]
    stream = relay.ClientStream(True)
    out, _ = run(stream, HANDSHAKE + set_encodings(*codes) + MESSAGES["KeyEvent"], seed=3)
    kept = [c for c in codes if c != EXTENDED_CLIPBOARD]
    assert out == HANDSHAKE + set_encodings(*kept) + MESSAGES["KeyEvent"]
    # control: without it, SetEncodings is unchanged (the parametrised test above too)
    assert run(relay.ClientStream(True), HANDSHAKE + set_encodings(*kept))[0] == (
        HANDSHAKE + set_encodings(*kept)
    )


TEXT = b"df = pd.read_csv('/data/x.csv')\n\tprint(df.shape)\r\ncaf\xe9 \xa0\xff ~"


def test_paste_on_forwards_text_byte_for_byte_with_its_audit_record():
    stream = relay.ClientStream(True)
    data = HANDSHAKE + cut_text(TEXT) + MESSAGES["KeyEvent"]
    out, pastes = run(stream, data, seed=7)
    assert out == data
    assert pastes == [relay.Paste(len(TEXT), hashlib.sha256(TEXT).hexdigest())]
    assert pastes[0].delivered


def test_paste_off_drops_the_text_and_reports_it_and_the_connection_goes_on():
    stream = relay.ClientStream(False)
    data = HANDSHAKE + cut_text(TEXT) + MESSAGES["KeyEvent"]
    out, pastes = run(stream, data, seed=7)
    assert out == HANDSHAKE + MESSAGES["KeyEvent"]  # the key after it still goes through
    assert pastes == [relay.Paste(len(TEXT), hashlib.sha256(TEXT).hexdigest(), "paste-off")]


CAP = 100


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"x" * (CAP + 1), "too-long"),
        (b"x" * 5000, "too-long"),
        (b"secret\x00", "nul-character"),
        (b"\x00", "nul-character"),
        (b"ls\x1b[2J", "control-character"),  # an escape sequence
        (b"a\x01b", "control-character"),
        (b"a\x7fb", "control-character"),  # DEL
        (b"a\x85b", "control-character"),  # C1 (NEL)
        (b"a\x08b", "control-character"),  # backspace
    ],
)
def test_paste_on_drops_what_is_not_text_within_the_limit(text, reason):
    stream = relay.ClientStream(True, max_chars=CAP)
    data = HANDSHAKE + cut_text(text) + MESSAGES["PointerEvent"]
    out, pastes = run(stream, data, seed=len(text))
    assert out == HANDSHAKE + MESSAGES["PointerEvent"]
    assert pastes == [relay.Paste(len(text), hashlib.sha256(text).hexdigest(), reason)]


def test_at_the_limit_and_with_tab_newline_cr_a_paste_is_text():
    """Control for the table above: exactly the limit, and the three allowed controls."""
    for text in (b"x" * CAP, b"\t\n\r" + b"y" * (CAP - 3), b""):
        stream = relay.ClientStream(True, max_chars=CAP)
        data = HANDSHAKE + cut_text(text)
        out, pastes = run(stream, data, seed=1)
        assert out == data and [p.reason for p in pastes] == [""], text[:10]


def test_an_extended_clipboard_message_is_dropped_even_with_paste_on():
    payload = struct.pack(">I", 0x10000001) + b"\x78\x9c" + b"compressed"
    stream = relay.ClientStream(True)
    data = HANDSHAKE + cut_text(payload, length=-len(payload) & 0xFFFFFFFF)
    out, pastes = run(stream, data + MESSAGES["KeyEvent"], seed=2)
    assert out == HANDSHAKE + MESSAGES["KeyEvent"]
    assert [(p.reason, p.characters) for p in pastes] == [("extended-clipboard", len(payload))]


def test_a_paste_cut_short_by_the_connection_is_reported_not_forwarded():
    stream = relay.ClientStream(True)
    out, pastes = stream.feed(HANDSHAKE + cut_text(TEXT)[:20])
    assert out == HANDSHAKE and pastes == []
    (cut,) = stream.end()
    assert (cut.reason, cut.characters) == ("connection-closed", 12)
    assert relay.ClientStream(True).end() == []  # control: nothing pending, nothing reported


def test_the_audit_lines_have_the_enclaves_log_format_and_never_the_text():
    """Field for field what havre.enclave.logs' JSON formatter writes for the same event
    (time aside), with the sha256 and the number of characters, never the text."""
    text = b"patient 4711 is in ward 3"
    sha = hashlib.sha256(text).hexdigest()
    refused = json.loads(
        relay.paste_line(relay.Paste(len(text), sha, "paste-off"), "dora", "renal")
    )
    delivered = json.loads(relay.paste_line(relay.Paste(len(text), sha), "dora", "renal"))

    def formatted(level: int, event: str, message: str, **fields) -> dict:
        record = logging.LogRecord(relay.LOGGER, level, __file__, 1, message, (), None)
        record.havre_fields = {"event": event, **fields}
        return json.loads(logs.JsonFormatter(relay.SERVICE).format(record))

    expected = formatted(
        logging.WARNING,
        "desktop.paste_refused",
        refused["message"],
        user="dora",
        project="renal",
        characters=len(text),
        sha256=sha,
        reason="paste-off",
    )
    assert list(refused) == list(expected)
    assert {k: v for k, v in refused.items() if k != "time"} == {
        k: v for k, v in expected.items() if k != "time"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", refused["time"])
    assert refused["level"] == "WARNING" and refused["service"] == "desktop"
    assert "desktop.paste_refused" in logs.SECURITY_EVENTS
    assert delivered["event"] == "desktop.paste" and delivered["level"] == "INFO"
    assert (delivered["characters"], delivered["sha256"]) == (len(text), sha)
    assert "reason" not in delivered
    for line in (refused, delivered):
        assert "4711" not in json.dumps(line) and "ward" not in json.dumps(line)


def test_the_pages_limit_and_characters_are_the_relays():
    """The paste box (paste-inbound-text.js) refuses before sending what the relay would drop."""
    page = (DESKTOP / "paste-inbound-text.js").read_text()
    assert f"const MAX_CHARS = {relay.MAX_CHARS};" in page
    assert r"const NOT_TEXT = /[^\t\n\r\x20-\x7e\xa0-\xff]/u;" in page
    allowed = {0x09, 0x0A, 0x0D, *range(0x20, 0x7F), *range(0xA0, 0x100)}
    assert relay.ALLOWED_BYTES == allowed


class FakeXvnc:
    """A Unix-socket server standing for Xvnc: greets, records what it receives."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.done = asyncio.Event()

    async def handle(self, reader, writer) -> None:
        writer.write(b"RFB 003.008\n")
        await writer.drain()
        while data := await reader.read(4096):
            self.received += data
        self.done.set()
        writer.close()


@pytest.mark.parametrize("paste", ["none", "inbound-text"])
def test_the_relay_on_unix_sockets_forwards_and_logs_each_paste(tmp_path, paste):
    """The relay's own loop (``serve``): the server's greeting reaches the client unchanged,
    the client's stream reaches the server as the parser says, one line per paste on stderr."""
    xvnc_path, relay_path = str(tmp_path / "xvnc.sock"), str(tmp_path / "vnc.sock")
    err = io.StringIO()

    async def scenario() -> tuple[bytes, bytes]:
        fake = FakeXvnc()
        server = await asyncio.start_unix_server(fake.handle, path=xvnc_path)
        task = asyncio.ensure_future(
            relay.serve(relay_path, xvnc_path, paste == "inbound-text", "dora", "renal")
        )
        for _ in range(100):
            if Path(relay_path).exists():
                break
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_unix_connection(relay_path)
        greeting = await reader.readexactly(12)
        writer.write(HANDSHAKE + cut_text(TEXT) + MESSAGES["KeyEvent"])
        await writer.drain()
        writer.close()
        await asyncio.wait_for(fake.done.wait(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
        return greeting, bytes(fake.received)

    with contextlib.redirect_stderr(err):
        greeting, received = asyncio.run(scenario())
    assert greeting == b"RFB 003.008\n"
    assert oct(Path(relay_path).stat().st_mode & 0o777) == "0o600"
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    events = [line for line in lines if "event" in line]
    sha = hashlib.sha256(TEXT).hexdigest()
    if paste == "inbound-text":
        assert received == HANDSHAKE + cut_text(TEXT) + MESSAGES["KeyEvent"]
        assert [(e["event"], e["sha256"]) for e in events] == [("desktop.paste", sha)]
    else:
        assert received == HANDSHAKE + MESSAGES["KeyEvent"]
        assert [(e["event"], e["reason"]) for e in events] == [
            ("desktop.paste_refused", "paste-off")
        ]
    assert all(e["user"] == "dora" and e["project"] == "renal" for e in events)
    assert TEXT.decode("latin-1") not in err.getvalue()


def test_the_relay_refuses_to_start_with_an_unknown_paste_mode(capsys):
    args = ["--listen", "/nonexistent/a", "--server", "/nonexistent/b", "--user", "dora"]
    assert relay.main([*args, "--project", "renal", "--paste", "inbound"]) == 2
    assert "--paste must be none or inbound-text (got 'inbound')" in capsys.readouterr().err


def test_each_paste_mode_has_its_page_script_and_none_adds_nothing():
    """The front serves ``paste-<desktop_paste>.js`` as noVNC's havre-paste.js: a file for each
    mode the config accepts (the relay accepts the same), and ``none``'s has no code at all."""
    assert relay.PASTE_MODES == DESKTOP_PASTE_MODES
    template = (DESKTOP / "nginx.conf.template").read_text()
    assert "alias /usr/share/havre-desktop/paste-@PASTE@.js;" in template
    dockerfile = (DESKTOP / "Dockerfile").read_text()
    for mode in DESKTOP_PASTE_MODES:
        assert (DESKTOP / f"paste-{mode}.js").is_file() and f"paste-{mode}.js" in dockerfile
    none = (DESKTOP / "paste-none.js").read_text().splitlines()
    assert none and all(line.startswith("//") or not line.strip() for line in none)
    # control: the other one does build the box and send
    assert "clipboardPasteFrom" in (DESKTOP / "paste-inbound-text.js").read_text()
