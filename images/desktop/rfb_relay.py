"""havre-desktop's RFB relay: the only way from noVNC (websockify) to the VNC server (Xvnc).

Installed in the desktop image (images/desktop/Dockerfile) and started by ``havre-desktop``
for every desktop, whatever its project allows: websockify's one token leads to this relay's
Unix socket, and the relay connects each client to Xvnc's own socket. Standard library only,
no Havre package code (the image has none).

It reads what the researcher's browser sends (the client-to-server half of RFB 3.7/3.8 with
security type None: protocol version, security type, ClientInit, then the messages noVNC 1.3
sends: SetPixelFormat, SetEncodings, FramebufferUpdateRequest, KeyEvent, PointerEvent,
ClientCutText, EnableContinuousUpdates, ClientFence, xvp, SetDesktopSize and QEMU's extended
key event) and forwards each message byte for byte, except:

* **SetEncodings** loses the Extended Clipboard pseudo-encoding, so the server never offers
  the extended clipboard and text can only come as a plain ClientCutText;
* **ClientCutText** (inbound paste) is forwarded only when the project allows it
  (``--paste inbound-text``, from ``projects.<slug>.desktop_paste``) and it is text: at most
  :data:`MAX_CHARS` characters of Latin-1 (RFB's encoding for it), no NUL and no control
  character other than tab, line feed and carriage return. Every paste, forwarded or dropped,
  is one JSON line on standard error (the container's log, which the SIEM reads):
  ``desktop.paste`` (INFO) or ``desktop.paste_refused`` (WARNING, with the reason), with the
  user, the project, the number of characters and the text's SHA-256, never the text itself;
* anything it can't parse (another protocol version or security type, an unknown message
  type, an oversized field) closes that connection (``desktop.rfb_refused``, WARNING): fail
  closed.

What the server sends goes back unchanged: nothing leaves through the clipboard because Xvnc
runs with ``-SendCutText=0 -SendPrimary=0`` (havre-desktop). docs/architecture.md, "Access
tiers"; docs/sysadmin/desktop.md, "Pasting text in".
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

#: the most characters one paste may carry (also in paste-inbound-text.js)
MAX_CHARS = 16_384
#: ``projects.<slug>.desktop_paste``
PASTE_MODES = ("none", "inbound-text")
#: the Extended Clipboard pseudo-encoding (0xc0a1e5ce), as SetEncodings carries it
EXTENDED_CLIPBOARD = 0xC0A1E5CE
#: more encodings than any client asks for (noVNC 1.3 sends 20): more closes the connection
MAX_ENCODINGS = 1024
#: RFB's limit on a ClientFence payload
MAX_FENCE = 64
#: the bytes a paste may hold: tab, LF, CR, printable ASCII and Latin-1's printable half
ALLOWED_BYTES = frozenset([0x09, 0x0A, 0x0D, *range(0x20, 0x7F), *range(0xA0, 0x100)])
_VERSION = re.compile(rb"RFB 003\.00[78]\n")

#: client message type -> its fixed length (the variable ones are read in _length)
_FIXED = {
    0: 20,  # SetPixelFormat
    3: 10,  # FramebufferUpdateRequest
    4: 8,  # KeyEvent
    5: 6,  # PointerEvent
    150: 10,  # EnableContinuousUpdates
    250: 4,  # xvp
}


class ProtocolRefused(Exception):
    """The client sent what the relay can't parse: its connection is closed."""


@dataclass(frozen=True)
class Paste:
    """One ClientCutText: forwarded (``reason`` empty) or dropped, and why."""

    characters: int
    sha256: str
    reason: str = ""

    @property
    def delivered(self) -> bool:
        return not self.reason


#: why a paste was dropped: its ``reason`` -> the sentence of its log line
REASONS = {
    "paste-off": "this project does not allow pasting into its desktops (desktop_paste: none)",
    "too-long": f"over the limit of {MAX_CHARS} characters",
    "nul-character": "it holds a NUL character (not text)",
    "control-character": "it holds a control character other than tab, line feed or CR",
    "extended-clipboard": "it uses the extended clipboard, which the relay does not offer",
    "connection-closed": "the connection closed before the whole paste arrived",
}


@dataclass
class _Cut:
    """A ClientCutText being read: its header, and its text kept only if it may be sent."""

    header: bytes
    remaining: int
    reason: str
    keep: bool
    hasher: Any = field(default_factory=hashlib.sha256)
    kept: bytearray = field(default_factory=bytearray)
    seen: int = 0
    bad: str = ""


class ClientStream:
    """The client-to-server half of one RFB connection: what to forward, what to report.

    ``feed(data)`` takes the bytes as they arrive (any split) and returns the bytes to send on
    to the server and the pastes seen; it raises :class:`ProtocolRefused` on anything else.
    """

    def __init__(self, paste: bool, max_chars: int = MAX_CHARS) -> None:
        self.paste = paste
        self.max_chars = max_chars
        self._buf = bytearray()
        self._state = "version"
        self._cut: _Cut | None = None

    def feed(self, data: bytes) -> tuple[bytes, list[Paste]]:
        self._buf += data
        out = bytearray()
        pastes: list[Paste] = []
        while True:
            if self._cut is not None:
                done = self._read_cut(out)
                if done is None:
                    break
                pastes.append(done)
                continue
            need = self._length()
            if need is None or len(self._buf) < need:
                break
            message = bytes(self._buf[:need])
            del self._buf[:need]
            self._handle(message, out)
        return bytes(out), pastes

    def end(self) -> list[Paste]:
        """The connection closed: a paste cut short is reported, never forwarded."""
        if self._cut is None:
            return []
        cut, self._cut = self._cut, None
        return [Paste(cut.seen, cut.hasher.hexdigest(), cut.reason or "connection-closed")]

    # -- parsing

    def _length(self) -> int | None:
        """The length of the next message, or None until enough of it has arrived to know."""
        buf = self._buf
        if self._state == "version":
            return 12
        if self._state in ("security", "init"):
            return 1
        if not buf:
            return None
        kind = buf[0]
        if kind in _FIXED:
            return _FIXED[kind]
        if kind == 2:  # SetEncodings: type, padding, count, then count s32
            if len(buf) < 4:
                return None
            count = struct.unpack_from(">H", buf, 2)[0]
            if count > MAX_ENCODINGS:
                raise ProtocolRefused(f"SetEncodings with {count} encodings")
            return 4 + 4 * count
        if kind == 6:  # ClientCutText: its header; the text is streamed (_read_cut)
            return 8
        if kind == 248:  # ClientFence: type, padding, flags, length, payload
            if len(buf) < 9:
                return None
            if buf[8] > MAX_FENCE:
                raise ProtocolRefused(f"ClientFence with a payload of {buf[8]} bytes")
            return 9 + buf[8]
        if kind == 251:  # SetDesktopSize: type, padding, w, h, screens, padding, screens * 16
            if len(buf) < 8:
                return None
            return 8 + 16 * buf[6]
        if kind == 255:  # QEMU client message: only the extended key event (subtype 0)
            if len(buf) < 2:
                return None
            if buf[1] != 0:
                raise ProtocolRefused(f"QEMU client message subtype {buf[1]}")
            return 12
        raise ProtocolRefused(f"unknown client message type {kind}")

    def _handle(self, message: bytes, out: bytearray) -> None:
        if self._state == "version":
            if not _VERSION.fullmatch(message):
                raise ProtocolRefused(f"protocol version {message!r}")
            self._state = "security"
            out += message
        elif self._state == "security":
            if message != b"\x01":
                raise ProtocolRefused(f"security type {message[0]} (only None, 1)")
            self._state = "init"
            out += message
        elif self._state == "init":
            self._state = "messages"
            out += message
        elif message[0] == 2:
            kept = [
                code
                for code in struct.unpack_from(f">{(len(message) - 4) // 4}I", message, 4)
                if code != EXTENDED_CLIPBOARD
            ]
            out += struct.pack(f">BxH{len(kept)}I", 2, len(kept), *kept)
        elif message[0] == 6:
            length = struct.unpack_from(">i", message, 4)[0]
            reason = ""
            if length < 0:
                reason, length = "extended-clipboard", -length
            elif not self.paste:
                reason = "paste-off"
            elif length > self.max_chars:
                reason = "too-long"
            self._cut = _Cut(message, length, reason, keep=not reason)
        else:
            out += message

    def _read_cut(self, out: bytearray) -> Paste | None:
        """Consume the current paste's text as it arrives; at its end, forward or drop it."""
        cut = self._cut
        assert cut is not None
        take = min(cut.remaining, len(self._buf))
        if take:
            chunk = bytes(self._buf[:take])
            del self._buf[:take]
            cut.hasher.update(chunk)
            cut.seen += take
            cut.remaining -= take
            if cut.keep:
                cut.kept += chunk
                if not cut.bad and 0 in chunk:
                    cut.bad = "nul-character"
                if not cut.bad and not ALLOWED_BYTES.issuperset(chunk):
                    cut.bad = "control-character"
        if cut.remaining:
            return None
        self._cut = None
        reason = cut.reason or cut.bad
        if not reason:
            out += cut.header + cut.kept
        return Paste(cut.seen, cut.hasher.hexdigest(), reason)


# -- the log lines (the format of havre.enclave.logs, whose JSON formatter this mirrors)

SERVICE = "desktop"
LOGGER = "havre.desktop.relay"


def log_line(
    level: str,
    message: str,
    *,
    event: str = "",
    user: str = "",
    project: str = "",
    **fields: object,
) -> str:
    """One JSON line as havre.enclave.logs writes them: time, level, service, logger, message,
    then event, user, project and the other fields."""
    now = time.time()
    line: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now * 1000) % 1000:03d}Z",
        "level": level,
        "service": SERVICE,
        "logger": LOGGER,
        "message": message,
    }
    if event:
        line["event"] = event
    if user:
        line["user"] = user
    if project:
        line["project"] = project
    line.update(fields)
    return json.dumps(line, ensure_ascii=False)


def paste_line(paste: Paste, user: str, project: str) -> str:
    """The audit line of one paste (the text itself is never in it: only its length and
    SHA-256; docs/sysadmin/desktop.md says why)."""
    if paste.delivered:
        return log_line(
            "INFO",
            f"Pasted {paste.characters} characters into {user}'s desktop in {project}",
            event="desktop.paste",
            user=user,
            project=project,
            characters=paste.characters,
            sha256=paste.sha256,
        )
    return log_line(
        "WARNING",
        f"Refused a paste of {paste.characters} characters into {user}'s desktop in {project}: "
        f"{REASONS[paste.reason]}",
        event="desktop.paste_refused",
        user=user,
        project=project,
        characters=paste.characters,
        sha256=paste.sha256,
        reason=paste.reason,
    )


# -- the relay


def _emit(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _relay(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    *,
    server_path: str,
    paste: bool,
    user: str,
    project: str,
) -> None:
    try:
        server_r, server_w = await asyncio.open_unix_connection(server_path)
    except OSError as err:
        _emit(log_line("ERROR", f"The VNC server is not answering: {err}", user=user))
        client_w.close()
        return
    stream = ClientStream(paste)

    async def upstream() -> None:
        try:
            while data := await client_r.read(65536):
                out, pastes = stream.feed(data)
                for each in pastes:
                    _emit(paste_line(each, user, project))
                if out:
                    server_w.write(out)
                    await server_w.drain()
        except ProtocolRefused as err:
            _emit(
                log_line(
                    "WARNING",
                    f"Closed a VNC connection to {user}'s desktop in {project}: the relay can't "
                    f"parse what it sent ({err})",
                    event="desktop.rfb_refused",
                    user=user,
                    project=project,
                    reason=str(err),
                )
            )
        finally:
            for each in stream.end():
                _emit(paste_line(each, user, project))

    async def downstream() -> None:
        while data := await server_r.read(65536):
            client_w.write(data)
            await client_w.drain()

    tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (server_w, client_w):
            writer.close()


async def serve(listen: str, server_path: str, paste: bool, user: str, project: str) -> None:
    """Relay each connection on Unix socket ``listen`` to ``server_path``, until killed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _relay(
            reader, writer, server_path=server_path, paste=paste, user=user, project=project
        )

    if os.path.exists(listen):
        os.unlink(listen)
    server = await asyncio.start_unix_server(handle, path=listen)
    os.chmod(listen, 0o600)
    state = "on (text only, audited)" if paste else "off"
    _emit(
        log_line(
            "INFO",
            f"VNC relay for {user}'s desktop in {project}: inbound paste {state}",
            user=user,
            project=project,
        )
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", required=True, help="the Unix socket websockify connects to")
    parser.add_argument("--server", required=True, help="Xvnc's Unix socket")
    parser.add_argument("--paste", required=True, help="none or inbound-text")
    parser.add_argument("--user", required=True)
    parser.add_argument("--project", required=True)
    args = parser.parse_args(argv)
    if args.paste not in PASTE_MODES:
        print(
            f"rfb_relay: --paste must be {' or '.join(PASTE_MODES)} (got {args.paste!r})",
            file=sys.stderr,
        )
        return 2
    if not args.user or not args.project:
        print("rfb_relay: --user and --project name whose desktop this is", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            serve(args.listen, args.server, args.paste == "inbound-text", args.user, args.project)
        )
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
