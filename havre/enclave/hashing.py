"""The one content digest of Havre's outputs: sha256 in lowercase hex.

It is what an outputs folder's checksum file holds and what the re-execution runner records
for every file it vouches for; both sides must compute it the same way, or a file the
researcher saved would not match the one a trusted run produced.

Standard library only.
"""

from __future__ import annotations

import hashlib

__all__ = ["sha256_hex"]


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data`` in lowercase hex."""
    return hashlib.sha256(data).hexdigest()
