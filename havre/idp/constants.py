"""The embedded provider's fixed parameters: scopes and claims, name patterns, lifetimes,
limits, file names, and its logger."""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("havre.idp")

#: Scopes the provider knows; others in a request are ignored (RFC 6749 §3.3).
SUPPORTED_SCOPES = ("openid", "profile", "email", "groups")
#: The user claims each scope releases (``sub`` is always released).
SCOPE_CLAIMS = {
    "profile": ("preferred_username", "name"),
    "email": ("email",),
    "groups": ("groups",),
}
CLAIMS_SUPPORTED = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "preferred_username",
    "name",
    "email",
    "groups",
)

USERNAME_PATTERN = r"[a-z0-9][a-z0-9._@-]{0,63}"
GROUP_PATTERN = r"/?[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}"  # Keycloak-style paths allowed
CLIENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
#: Secrets are at least 32 URL-unreserved characters, so that form-encoding them (as RFC 6749
#: §2.3.1 asks of HTTP Basic client credentials) changes nothing, whatever the client does.
SECRET_PATTERN = r"[A-Za-z0-9._~-]{32,512}"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
_GROUP_RE = re.compile(GROUP_PATTERN)
_CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)
_SECRET_RE = re.compile(SECRET_PATTERN)
_PKCE_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1 (verifier) and §4.2
_S256_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")

CODE_SECONDS = 60
LOGIN_REQUEST_SECONDS = 600
RATE_LIMIT_WINDOW_SECONDS = 60
USED_CODE_MEMORY_SECONDS = 600
MAX_PENDING = 10_000  # login requests, codes and rate-limit keys kept at most, each
MAX_BODY_BYTES = 64 * 1024
KEY_FILE_NAME = "signing-key.pem"
#: sign-ins and their tokens (SHA-256 digests only, never a token in clear), so that a restart
#: of the provider signs nobody out
TOKENS_FILE_NAME = "tokens.json"
TOKENS_SCHEMA = 1
#: password hashes computed at once (each Argon2id check holds 64 MiB)
HASH_WORKERS = 2
BROWSER_COOKIE = "havre_idp_browser"
TEMPLATES = Path(__file__).parent / "templates"
#: the provider's copy of Havre's one stylesheet (``style/havre.css``, copied by images/build.sh),
#: inlined in the sign-in pages under the page's CSP nonce
STYLESHEET = Path(__file__).parent / "static" / "havre.css"

_USER_KEYS = ("password_hash", "groups", "email", "name")
_ADMIN_KEYS = ("groups", "email", "name", "password")
