"""A paste sent over VNC inside a desktop container, and what Xvnc's clipboard then holds.

Run inside a desktop (``docker exec ... python3 -c <this file's text> SOCKET TEXT``, as the
desktop's user: standard library only, the image's python3). It speaks RFB 3.8 with security
None to ``SOCKET`` (the relay's ``/tmp/desktop/vnc.sock``, where websockify sends noVNC's
input, or Xvnc's own ``/tmp/desktop/xvnc.sock`` behind it), sends ``TEXT`` as a ClientCutText,
waits for the answer to a FramebufferUpdateRequest sent after it (the server has then handled
the paste), and, with that connection still open (Xvnc gives up the clipboard when its client
leaves), asks the X server over its own socket, as an X client with the desktop's cookie,
who owns the CLIPBOARD selection and what it holds. With ``--junk``, it sends a message no
VNC client sends instead, and reports whether the connection was closed.

Prints one JSON object: ``owner`` (the selection owner's window, 0 for none), ``text`` (the
selection's text, or null), ``closed`` (with --junk).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

XAUTHORITY = "/tmp/desktop/Xauthority"
X_SOCKET = "/tmp/.X11-unix/X0"


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def rfb_connect(path: str) -> socket.socket:
    for _ in range(100):  # (the desktop may still be starting: bounded)
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        try:
            s.connect(path)
            break
        except OSError:
            s.close()
            time.sleep(0.1)
    else:
        raise SystemExit(f"nothing listens on {path}")
    recv_exactly(s, 12)
    s.sendall(b"RFB 003.008\n")
    count = recv_exactly(s, 1)[0]
    recv_exactly(s, count)
    s.sendall(b"\x01")
    assert recv_exactly(s, 4) == b"\0\0\0\0", "security result"
    s.sendall(b"\x01")  # ClientInit, shared
    head = recv_exactly(s, 24)
    recv_exactly(s, struct.unpack(">I", head[20:24])[0])
    return s


def pad(n: int) -> int:
    return (4 - n % 4) % 4


def x_cookie() -> bytes:
    with open(XAUTHORITY, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        i += 2  # family
        fields = []
        for _ in range(4):  # address, number, name, data
            (n,) = struct.unpack_from(">H", data, i)
            fields.append(data[i + 2 : i + 2 + n])
            i += 2 + n
        if fields[2] == b"MIT-MAGIC-COOKIE-1":
            return fields[3]
    raise SystemExit("no MIT-MAGIC-COOKIE-1 in " + XAUTHORITY)


class X:
    """Just enough of the X11 protocol to read a selection."""

    def __init__(self) -> None:
        name, cookie = b"MIT-MAGIC-COOKIE-1", x_cookie()
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(X_SOCKET)
        self.s.sendall(
            struct.pack("<BxHHHHxx", 0x6C, 11, 0, len(name), len(cookie))
            + name
            + b"\0" * pad(len(name))
            + cookie
            + b"\0" * pad(len(cookie))
        )
        head = recv_exactly(self.s, 8)
        body = recv_exactly(self.s, 4 * struct.unpack_from("<H", head, 6)[0])
        if head[0] != 1:
            raise SystemExit(f"X refused the connection: {body[: head[1]]!r}")
        base = struct.unpack_from("<I", body, 4)[0]
        vendor, formats = struct.unpack_from("<H", body, 16)[0], body[21]
        self.root = struct.unpack_from("<I", body, 32 + vendor + pad(vendor) + 8 * formats)[0]
        self.window = base | 1

    def reply(self) -> bytes:
        """The next reply (events before it skipped; an error raises)."""
        while True:
            head = recv_exactly(self.s, 32)
            if head[0] == 0:
                raise SystemExit(f"X error {head[1]}")
            if head[0] == 1:
                return head + recv_exactly(self.s, 4 * struct.unpack_from("<I", head, 4)[0])

    def event(self, code: int) -> bytes:
        while True:
            head = recv_exactly(self.s, 32)
            if head[0] == 0:
                raise SystemExit(f"X error {head[1]}")
            if head[0] & 0x7F == code:
                return head

    def atom(self, name: bytes) -> int:
        self.s.sendall(
            struct.pack("<BBHH2x", 16, 0, 2 + (len(name) + pad(len(name))) // 4, len(name))
            + name
            + b"\0" * pad(len(name))
        )
        return struct.unpack_from("<I", self.reply(), 8)[0]

    def selection(self, name: bytes) -> tuple[int, str | None]:
        """(owner, text) of selection ``name``."""
        selection, target = self.atom(name), self.atom(b"UTF8_STRING")
        prop = self.atom(b"HAVRE_PROBE")
        self.s.sendall(struct.pack("<BxHI", 23, 2, selection))  # GetSelectionOwner
        owner = struct.unpack_from("<I", self.reply(), 8)[0]
        # CreateWindow (InputOnly) to receive it, ConvertSelection, wait for SelectionNotify
        self.s.sendall(
            struct.pack("<BBHIIhhHHHHII", 1, 0, 8, self.window, self.root, 0, 0, 1, 1, 0, 2, 0, 0)
        )
        self.s.sendall(struct.pack("<BxHIIIII", 24, 6, self.window, selection, target, prop, 0))
        notify = self.event(31)
        if struct.unpack_from("<I", notify, 20)[0] == 0:
            return owner, None
        self.s.sendall(struct.pack("<BBHIIIII", 20, 0, 6, self.window, prop, 0, 0, 1 << 20))
        answer = self.reply()
        fmt, count = answer[1], struct.unpack_from("<I", answer, 16)[0]
        return owner, answer[32 : 32 + count * fmt // 8].decode("utf-8", "replace")


def main() -> None:
    path, text = sys.argv[1], sys.argv[2]
    s = rfb_connect(path)
    if "--junk" in sys.argv[3:]:
        s.sendall(b"\x07" + b"\0" * 7)  # a message type no VNC client sends
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        print(json.dumps({"closed": closed}))
        return
    data = text.encode("latin-1")
    s.sendall(struct.pack(">BxxxI", 6, len(data)) + data)
    s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, 1, 1))  # FramebufferUpdateRequest, 1x1
    assert recv_exactly(s, 1) == b"\x00", "a FramebufferUpdate"
    owner, held = X().selection(b"CLIPBOARD")
    print(json.dumps({"owner": owner, "text": held}))
    s.close()


if __name__ == "__main__":
    main()
