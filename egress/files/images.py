"""PNG and JPEG: checked by walking every chunk or segment to the end, shown through ``<img>``.

The threats: data hidden after an image's end or inside an unknown critical chunk (a polyglot
file, a second file carried out), and metadata (text chunks, EXIF, XMP, comments) holding
disclosive text; the first is refused, the second warned about. An image is shown to a checker
only as ``<img src=raw_url>`` (SVG too), which never runs a script; never as inline base64."""

from __future__ import annotations

import zlib

from egress.files.common import FileRefused, esc, human_size

# --- the check ----------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

_PNG_METADATA = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}
_PNG_KNOWN = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
    b"cICP", b"mDCv", b"cLLi", b"bKGD", b"hIST", b"pHYs", b"sPLT", b"acTL", b"fcTL", b"fdAT",
    *_PNG_METADATA,
}  # fmt: skip


def check_png(data: bytes) -> list[str]:
    """Walk the PNG chunks (CRC-checked) to IEND; refuse trailing data; return warnings."""
    pos = len(PNG_MAGIC)
    metadata: list[str] = []
    unknown: list[str] = []
    first = True
    while True:
        if pos + 12 > len(data):
            raise FileRefused("the PNG is truncated (it ends before its IEND chunk)")
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise FileRefused(f"the PNG is truncated or corrupt (chunk at byte offset {pos})")
        if not (ctype.isascii() and ctype.isalpha()):
            raise FileRefused(f"the PNG is corrupt (bad chunk type at byte offset {pos})")
        crc = int.from_bytes(data[end - 4 : end], "big")
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise FileRefused(
                f"the PNG is corrupt: chunk {ctype.decode()} at byte offset {pos} has a bad "
                "checksum"
            )
        if first and ctype != b"IHDR":
            raise FileRefused("the PNG is corrupt: it does not start with an IHDR chunk")
        first = False
        if ctype in _PNG_METADATA:
            metadata.append(ctype.decode())
        elif ctype not in _PNG_KNOWN:
            if ctype[:1].isupper():
                raise FileRefused(f"the PNG has an unknown critical chunk {ctype.decode()}")
            unknown.append(ctype.decode())
        if ctype == b"IEND":
            break
        pos = end
    if end != len(data):
        raise FileRefused(
            f"the PNG has {len(data) - end} bytes of data after its end (the IEND chunk); "
            "data hidden after an image is refused"
        )
    warnings = []
    if metadata:
        warnings.append(
            f"PNG has metadata chunks ({', '.join(sorted(set(metadata)))}): check them for "
            "disclosive text"
        )
    if unknown:
        warnings.append(f"PNG has non-standard chunks ({', '.join(sorted(set(unknown)))})")
    return warnings


def check_jpeg(data: bytes) -> list[str]:
    """Walk the JPEG segments and entropy-coded data to EOI; refuse trailing data."""
    size = len(data)
    pos = 2
    notes: set[str] = set()
    while True:
        if pos >= size or data[pos] != 0xFF:
            raise FileRefused(f"the JPEG is truncated or corrupt (no marker at byte offset {pos})")
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            raise FileRefused("the JPEG is truncated (it ends before its EOI marker)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0x00, 0xD8):
            raise FileRefused(f"the JPEG is corrupt (unexpected marker at byte offset {pos - 2})")
        if pos + 2 > size:
            raise FileRefused("the JPEG is truncated")
        length = int.from_bytes(data[pos : pos + 2], "big")
        segment_end = pos + length
        if length < 2 or segment_end > size:
            raise FileRefused(f"the JPEG is truncated or corrupt (segment at byte offset {pos})")
        if marker == 0xE1:
            body = data[pos + 2 : pos + 40]
            notes.add("XMP" if body.startswith(b"http://ns.adobe.com/xap") else "EXIF")
        elif marker == 0xED:
            notes.add("IPTC/Photoshop")
        elif marker == 0xFE:
            notes.add("comment")
        pos = segment_end
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                at = data.find(b"\xff", pos)
                if at < 0 or at + 1 >= size:
                    raise FileRefused("the JPEG is truncated (it ends inside image data)")
                following = data[at + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos = at + 1
                    continue
                pos = at
                break
    if pos != size:
        raise FileRefused(
            f"the JPEG has {size - pos} bytes of data after its end (the EOI marker FFD9); "
            "data hidden after an image is refused"
        )
    if notes:
        return [f"JPEG has metadata ({', '.join(sorted(notes))}): check it for disclosive text"]
    return []


# --- the rendering ------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xDA)):
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF and i + 9 <= len(data):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                data[i + 5 : i + 7], "big"
            )
        if length < 2:
            return None
        i += 2 + length
    return None


def render_image(kind: str, data: bytes, name: str, raw_url: str, notes: list[str]) -> str:
    size = {"png": _png_size, "jpeg": _jpeg_size}.get(kind, lambda _: None)(data)
    label = {"png": "PNG", "jpeg": "JPEG", "svg": "SVG"}[kind]
    dims = f", {size[0]:,} × {size[1]:,} pixels" if size else ""
    notes.append(f"{label} image{dims}, {human_size(len(data))}.")
    if kind == "svg":
        notes.append(
            "SVG is shown as an image: scripts in it never run and it loads nothing from "
            "elsewhere. Text hidden in the SVG (outside the visible area, transparent, tiny) is "
            "only visible in the raw file."
        )
    return (
        f'<figure class="havre-image havre-image-{kind}"><img src="{esc(raw_url)}" '
        f'alt="{esc(name)}" referrerpolicy="no-referrer"></figure>'
    )
