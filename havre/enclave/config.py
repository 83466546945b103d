"""The enclave configuration file: loading, strict validation and derived names.

One YAML file describes a Havre enclave: its name, its state directory, the allow-list of
notebook images, default resource limits, the projects (with their members), the output
checkers and the output review policy.  Both the hub and the egress service read it.

The file is validated when it is loaded.  Validation collects *every* problem rather than
stopping at the first one, and each problem names the offending field by its dotted path
(``projects.cardio.members[1]``) together with the offending value, e.g.::

    invalid enclave config /etc/havre/enclave.yaml:
      - projects.cardio.title: must be a non-empty string (got '')
      - limits.memory: must be at least 256M (got '128M')

Unknown keys are refused (typo protection), duplicate YAML mapping keys are refused (with
their line numbers), and YAML 1.1 booleans (``yes``/``no``/``on``/``off``) are not accepted
where a string is expected.

This module only depends on the standard library and PyYAML.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_LIMITS",
    "DEFAULT_NAME",
    "DEFAULT_REVIEWS_REQUIRED",
    "DEFAULT_STATE_DIR",
    "EnclaveConfig",
    "EnclaveConfigError",
    "Limits",
    "Project",
    "ReviewPolicy",
    "UnknownProjectError",
    "docker_safe_name",
    "dump_enclave_config",
    "format_size",
    "load_enclave_config",
    "parse_enclave_config",
    "parse_enclave_yaml",
    "parse_size",
]

# --------------------------------------------------------------------------------------
# Grammar and bounds
# --------------------------------------------------------------------------------------

#: Enclave name: the prefix of every Docker object (containers, networks, volumes).
NAME_PATTERN = r"[a-z][a-z0-9-]{0,19}"
#: Project slug; additionally it must not end with ``-``.  JupyterHub named-server names
#: only allow ``[a-z0-9-]``.
SLUG_PATTERN = r"[a-z][a-z0-9-]{1,29}"
#: Username (researchers and output checkers).
USERNAME_PATTERN = r"[a-z0-9][a-z0-9._@-]{0,63}"

_NAME_RE = re.compile(NAME_PATTERN)
_SLUG_RE = re.compile(SLUG_PATTERN)
_USERNAME_RE = re.compile(USERNAME_PATTERN)

# Docker image references (a pragmatic subset of the distribution/reference grammar).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z0-9_+.-]+:[A-Za-z0-9=_-]+))?"
)
_SHA256_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

CPU_MAX = 64.0
MEMORY_MIN_BYTES = 256 * MIB
PIDS_MIN = 32
PIDS_MAX = 65536
REVIEWS_MIN = 1
REVIEWS_MAX = 5
_INT64_MAX = 2**63 - 1

_TOP_KEYS = (
    "enclave",
    "images",
    "limits",
    "projects",
    "output_checkers",
    "review",
    "identity",
    "culling",
    "notifications",
)
_NOTIFICATIONS_KEYS = ("smtp", "address_template")
_ENCLAVE_KEYS = (
    "name",
    "state_dir",
    "uid_base",
    "uid_count",
    "project_filesystems",
    "project_filesystem_size",
)
#: ``enclave.project_filesystems``: one shared host filesystem, or a loop-mounted image each.
PROJECT_FILESYSTEMS = ("shared", "loop")
_IMAGES_KEYS = ("allowed", "default")
_LIMITS_KEYS = ("cpu", "memory", "pids")
_PROJECT_KEYS = ("title", "members", "groups", "data_path", "image", "limits")
_IDENTITY_KEYS = (
    "provider",
    "checker_groups",
    "admin_groups",
    "server_access_groups",
    "break_glass_minutes",
    "refresh_seconds",
    "membership_check_seconds",
    "oidc",
)
_OIDC_KEYS = (
    "authorize_url",
    "token_url",
    "userdata_url",
    "logout_url",
    "client_id",
    "client_secret_file",
    "username_claim",
    "groups_claim",
    "scopes",
)
_OIDC_REQUIRED = ("authorize_url", "token_url", "userdata_url", "client_id", "client_secret_file")
_CULLING_KEYS = ("idle_seconds", "max_age_seconds")
PROVIDERS = ("embedded", "oidc")
#: Names of the hub groups Havre manages from the identity provider's groups.
CHECKERS_HUB_GROUP = "output-checkers"
ADMINS_HUB_GROUP = "hub-admins"
SERVER_ACCESS_HUB_GROUP = "server-access"
#: Eligible for break glass (the provider lists them in a server-access group): grants nothing
#: until the user activates it on the hub's break-glass page (see ``havre.enclave.break_glass``).
BREAK_GLASS_HUB_GROUP = "break-glass"
#: The longest break-glass window a config may allow, in minutes (one working day).
BREAK_GLASS_MAX_MINUTES = 480


def project_hub_group(slug: str) -> str:
    """The hub group whose members belong to project ``slug``."""
    return f"project-{slug}"


def group_matches(configured: str, provider_group: str) -> bool:
    """Whether a group name sent by the identity provider matches a configured one.

    Keycloak sends full group paths (``/project-cardio``, ``/org/cardio``). A configured
    name without a leading ``/`` matches the bare name and the top-level path form; a
    configured path (``/org/cardio``) matches only that exact path.
    """
    if configured.startswith("/"):
        return provider_group == configured
    return provider_group in (configured, "/" + configured)


_REVIEW_KEYS = ("reviews_required", "reexecution_seconds")
#: the bounds of review.reexecution_seconds
REEXECUTION_SECONDS_MIN, REEXECUTION_SECONDS_MAX = 10, 24 * 3600

_TOP = "top level"

# Control, format (e.g. bidi overrides), surrogate and line/paragraph separator characters.
_BAD_TITLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

_BOOL_HINT = "; note: YAML reads unquoted yes/no/on/off/true/false as booleans, quote the value"

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = 6
_repr.maxtuple = 6
_repr.maxdict = 4
_repr.maxset = 6
_repr.maxlevel = 3


def _show(value: object) -> str:
    """A bounded ``repr`` of a (possibly huge or deeply nested) value."""
    return _repr.repr(value)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class EnclaveConfigError(ValueError):
    """The enclave config file is missing, unreadable or invalid.

    ``problems`` lists every problem found, one string each, normally of the form
    ``"<dotted.path>: <what is wrong> (got <value!r>)"``.  ``str(err)`` is::

        invalid enclave config <source>:
          - <problem 1>
          - <problem 2>
    """

    def __init__(self, problems: Iterable[str], source: str = "<string>") -> None:
        self.problems: list[str] = list(problems)
        self.source: str = source
        lines = [f"invalid enclave config {source}:"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))


class UnknownProjectError(KeyError):
    """Raised by :meth:`EnclaveConfig.project` for a slug that is not configured."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown project"


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[kmgt]i?)?b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}


def parse_size(text: str | int) -> int:
    """Parse a memory size into bytes.

    Accepted: a non-negative ``int`` (bytes), or a string holding an integer or decimal
    number with an optional ``K``/``M``/``G``/``T`` suffix in *binary* units
    (``1K == 1024``).  The suffix is case-insensitive and may be followed by ``i`` and/or
    ``B`` (``512M``, ``512m``, ``512Mi``, ``512MiB`` are the same).  A decimal with a suffix
    is rounded down to whole bytes (``1.5G`` -> 1610612736); a decimal without a suffix is
    refused.

    >>> parse_size("512M")
    536870912

    Raises ``ValueError`` with a message naming the bad value.
    """
    expected = (
        "expected a number of bytes or a number with a K, M, G or T suffix "
        "(binary units, e.g. 512M, 1.5G)"
    )
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"invalid size {text!r}: {expected}")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"invalid size {text!r}: {expected}")
        unit = (match.group("unit") or "").lower().rstrip("i")
        try:
            number = Decimal(match.group("num"))
        except InvalidOperation:  # pragma: no cover - the regex only lets digits through
            raise ValueError(f"invalid size {text!r}: {expected}") from None
        if not unit and number != number.to_integral_value():
            raise ValueError(f"invalid size {text!r}: a size without a unit must be whole bytes")
        value = int(number * _SIZE_UNITS[unit])
    if value < 0:
        raise ValueError(f"invalid size {text!r}: must not be negative")
    if value > _INT64_MAX:
        raise ValueError(f"invalid size {text!r}: too large")
    return value


def format_size(n_bytes: int) -> str | int:
    """Render a byte count the way the config file writes it.

    Uses the largest of ``T``/``G``/``M``/``K`` that divides ``n_bytes`` exactly (``"4G"``),
    otherwise returns the plain ``int``.  ``parse_size(format_size(n)) == n`` always holds.
    """
    for suffix, mult in (("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)):
        if n_bytes and n_bytes % mult == 0:
            return f"{n_bytes // mult}{suffix}"
    return n_bytes


# --------------------------------------------------------------------------------------
# The configuration objects
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Resource limits of one notebook container."""

    cpu: float
    memory_bytes: int
    pids: int


@dataclass(frozen=True)
class Project:
    """One research project: who is in it, where its data is, what it runs."""

    slug: str
    title: str
    members: frozenset[str]
    data_path: Path
    image: str
    limits: Limits
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class OidcSettings:
    """How the hub talks to an external OpenID Connect provider (Keycloak, ...)."""

    authorize_url: str
    token_url: str
    userdata_url: str
    client_id: str
    client_secret_file: Path
    logout_url: str = ""
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")


@dataclass(frozen=True)
class IdentityConfig:
    """Who users are (the identity provider) and which of their groups give which rights."""

    provider: str = "embedded"
    checker_groups: tuple[str, ...] = ("output-checkers",)
    admin_groups: tuple[str, ...] = ("havre-admins",)
    server_access_groups: tuple[str, ...] = ()
    break_glass_minutes: int = 60
    refresh_seconds: int = 300
    membership_check_seconds: int = 60
    oidc: OidcSettings | None = None


@dataclass(frozen=True)
class CullingPolicy:
    """When idle or old notebook servers are stopped (0 = never)."""

    idle_seconds: int = 3600
    max_age_seconds: int = 12 * 3600


@dataclass(frozen=True)
class NotificationSettings:
    """E-mail about release requests: the relay (checked by the egress service) and addresses.

    ``smtp`` is kept as given (host, port, sender, starttls, ssl, username, password_file,
    timeout, ca_file) and validated in full by ``egress.notifications.smtp.parse_smtp_settings``;
    ``None`` means no e-mail. ``address_template`` turns a username into an address.
    """

    smtp: Mapping[str, Any] | None = None
    address_template: str = ""

    def __hash__(self) -> int:
        return hash((tuple(sorted((self.smtp or {}).items())), self.address_template))


@dataclass(frozen=True)
class ReviewPolicy:
    """How outputs leave the enclave."""

    reviews_required: int = 2
    #: seconds a trusted re-execution of a notebook may run before it is stopped
    reexecution_seconds: int = 600


class _FrozenMapping(Mapping[str, Project]):
    """An immutable, hashable, insertion-ordered mapping backed by a tuple of pairs."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: Iterable[tuple[str, Project]] = ()) -> None:
        pairs = tuple(items)
        index: dict[str, Project] = {}
        for key, value in pairs:
            if key in index:
                raise ValueError(f"duplicate key {key!r}")
            index[key] = value
        object.__setattr__(self, "_items", pairs)
        object.__setattr__(self, "_index", index)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("read-only mapping")

    def __getitem__(self, key: str) -> Project:
        return self._index[key]

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{k!r}: {v!r}' for k, v in self._items)}}}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._items,))


DEFAULT_NAME = "havre"
DEFAULT_STATE_DIR = Path("/var/lib/havre")
DEFAULT_IMAGE = "havre/notebook:0.1.0"
DEFAULT_LIMITS = Limits(cpu=1.0, memory_bytes=2 * GIB, pids=512)
DEFAULT_REVIEWS_REQUIRED = 2


def docker_safe_name(text: str) -> str:
    """Make ``text`` usable inside a Docker object name.

    ``@`` becomes ``-at-`` and any other character outside ``[a-zA-Z0-9_.-]`` becomes ``-``.
    """
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text.replace("@", "-at-"))


def _require_slug(slug: str) -> str:
    if not isinstance(slug, str) or not _is_slug(slug):
        raise ValueError(f"invalid project slug {slug!r}")
    return slug


def _require_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME_RE.fullmatch(username):
        raise ValueError(f"invalid username {username!r}: must match {USERNAME_PATTERN}")
    return username


@dataclass(frozen=True)
class EnclaveConfig:
    """A validated enclave configuration (see :func:`load_enclave_config`).

    ``projects`` is an immutable, insertion-ordered mapping ``slug -> Project``.  ``source``
    (the file it came from) does not take part in equality.

    The path and name helpers validate their arguments' *format* (slug and username
    grammar, so that they can never escape the state directory) and raise ``ValueError``
    otherwise; they do not check that the project exists or that the user is a member.
    Authorisation is :meth:`is_member`'s job.
    """

    name: str
    state_dir: Path
    allowed_images: tuple[str, ...]
    default_image: str
    projects: Mapping[str, Project]
    output_checkers: frozenset[str]
    review: ReviewPolicy
    source: str = field(default="<string>", compare=False)
    identity: IdentityConfig = IdentityConfig()
    culling: CullingPolicy = CullingPolicy()
    notifications: NotificationSettings = NotificationSettings()
    #: Havre's id range: a uid per (user, project) server and a gid per project
    #: (havre/enclave/identities.py); no host account may use it.
    uid_base: int = 2_000_000
    uid_count: int = 1_000_000
    #: "shared": homes and outputs on the state folder's filesystem; "loop": a loop-mounted
    #: ext4 image per project (docs/sysadmin/enclave-config.md).
    project_filesystems: str = "shared"
    #: Size of each project's filesystem image with "loop" (allocated on the host up front).
    project_filesystem_size: int = 4 * 1024**3

    def __post_init__(self) -> None:
        if not isinstance(self.projects, _FrozenMapping):
            object.__setattr__(self, "projects", _FrozenMapping(self.projects.items()))
        object.__setattr__(self, "allowed_images", tuple(self.allowed_images))
        object.__setattr__(self, "output_checkers", frozenset(self.output_checkers))

    def projects_of(self, username: str, hub_groups: Iterable[str] = ()) -> list[Project]:
        """The projects ``username`` is a member of, in config order.

        Membership is the project's ``members`` list or the project's hub group
        (``project-<slug>``, given to users whose identity-provider groups match).
        """
        groups = set(hub_groups)
        return [
            p
            for p in self.projects.values()
            if username in p.members or project_hub_group(p.slug) in groups
        ]

    def is_member(self, username: str, slug: str, hub_groups: Iterable[str] = ()) -> bool:
        """Whether ``username`` is a member of project ``slug`` (``False`` if unknown)."""
        project = self.projects.get(slug) if isinstance(slug, str) else None
        if project is None:
            return False
        return username in project.members or project_hub_group(slug) in set(hub_groups)

    def is_checker(self, username: str, hub_groups: Iterable[str] = ()) -> bool:
        """Whether ``username`` is an output checker (listed, or in a checker group)."""
        return username in self.output_checkers or CHECKERS_HUB_GROUP in set(hub_groups)

    def hub_groups_for(self, provider_groups: Iterable[str]) -> list[str]:
        """Map the identity provider's groups to the hub groups Havre manages.

        Unmapped provider groups are dropped: they never reach the hub.
        """
        given = [g for g in provider_groups if isinstance(g, str)]
        ident = self.identity
        result: list[str] = []

        def matches(configured: Iterable[str]) -> bool:
            return any(group_matches(c, g) for c in configured for g in given)

        for project in self.projects.values():
            if matches(project.groups):
                result.append(project_hub_group(project.slug))
        if matches(ident.checker_groups):
            result.append(CHECKERS_HUB_GROUP)
        if matches(ident.admin_groups):
            result.append(ADMINS_HUB_GROUP)
        if matches(ident.server_access_groups):
            # eligible only: server-access itself is given by an activation on the hub
            result.append(BREAK_GLASS_HUB_GROUP)
        return result

    def all_hub_groups(self) -> list[str]:
        """Every hub group Havre may give (the hub's allow-list of groups)."""
        groups = [project_hub_group(slug) for slug in self.projects]
        return groups + [
            CHECKERS_HUB_GROUP,
            ADMINS_HUB_GROUP,
            BREAK_GLASS_HUB_GROUP,
            SERVER_ACCESS_HUB_GROUP,
        ]

    def project(self, slug: str) -> Project:
        """The project ``slug``; raises :class:`UnknownProjectError` (a ``KeyError``)."""
        try:
            return self.projects[slug]
        except (KeyError, TypeError):
            known = ", ".join(self.projects) or "none"
            raise UnknownProjectError(
                f"unknown project {slug!r} (configured projects: {known})"
            ) from None

    def project_dir(self, slug: str) -> Path:
        """``<state_dir>/projects/<slug>``."""
        return self.state_dir / "projects" / _require_slug(slug)

    def home_dir(self, slug: str, username: str) -> Path:
        """``<state_dir>/projects/<slug>/homes/<username>``."""
        return self.project_dir(slug) / "homes" / _require_username(username)

    def outputs_dir(self, slug: str) -> Path:
        """``<state_dir>/projects/<slug>/outputs``."""
        return self.project_dir(slug) / "outputs"

    def network_name(self, slug: str) -> str:
        """The Docker network of project ``slug``: ``<name>-project-<slug>``."""
        return f"{self.name}-project-{_require_slug(slug)}"

    def container_name(self, slug: str, username: str) -> str:
        """The notebook container of ``username`` in ``slug``: ``<name>-nb-<slug>-<user>``.

        The username is made Docker-name-safe with :func:`docker_safe_name`
        (``@`` -> ``-at-``).  The config validation refuses two members of one project
        whose usernames would give the same container name.
        """
        _require_slug(slug)
        return f"{self.name}-nb-{slug}-{docker_safe_name(_require_username(username))}"


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _is_slug(value: str) -> bool:
    return bool(_SLUG_RE.fullmatch(value)) and not value.endswith("-")


def _join(parent: str, key: object) -> str:
    return f"{parent}.{key}" if parent else str(key)


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str, *value: object) -> None:
        """Record a problem; if a value is passed it is shown as ``(got <repr>)``."""
        text = f"{path}: {message}"
        if value:
            text += f" (got {_show(value[0])})"
            if isinstance(value[0], bool):
                text += _BOOL_HINT
        self.items.append(text)


def _check_keys(
    p: _Problems, mapping: Mapping[Any, Any], path: str, allowed: tuple[str, ...]
) -> None:
    for key in mapping:
        if isinstance(key, str) and key in allowed:
            continue
        hint = ""
        if isinstance(key, str):
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                hint = f", did you mean {close[0]!r}?"
        p.add(
            _join(path, key),
            f"unknown key {key!r}{hint} (allowed keys: {', '.join(sorted(allowed))})",
        )


def _section(
    p: _Problems, parent: Mapping[Any, Any], key: str, path: str, allowed: tuple[str, ...]
) -> Mapping[Any, Any]:
    """An optional sub-mapping; absent or null means empty."""
    raw = parent.get(key)
    where = _join(path, key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        p.add(where, "must be a mapping", raw)
        return {}
    _check_keys(p, raw, where, allowed)
    return raw


def _string(p: _Problems, value: object, path: str, what: str = "a string") -> str | None:
    if not isinstance(value, str):
        p.add(path, f"must be {what}", value)
        return None
    return value


def _abs_path(p: _Problems, value: object, path: str) -> Path | None:
    text = _string(p, value, path, "an absolute path")
    if text is None:
        return None
    if not text.startswith("/"):
        p.add(path, "must be an absolute path (starting with '/')", text)
        return None
    if "\0" in text:
        p.add(path, "must not contain NUL characters", text)
        return None
    if ".." in text.split("/"):
        p.add(path, "must not contain '..' components", text)
        return None
    return Path(text)


def _username(p: _Problems, value: object, path: str) -> str | None:
    name = _string(p, value, path, "a username (string)")
    if name is None:
        return None
    if not _USERNAME_RE.fullmatch(name):
        p.add(path, f"invalid username: must match {USERNAME_PATTERN}", name)
        return None
    return name


def _usernames(p: _Problems, value: object, path: str) -> list[str]:
    """A list of unique usernames; absent or null means empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        p.add(path, "must be a list of usernames", value)
        return []
    result: list[str] = []
    for i, item in enumerate(value):
        name = _username(p, item, f"{path}[{i}]")
        if name is None:
            continue
        if name in result:
            p.add(f"{path}[{i}]", "duplicate username", name)
            continue
        result.append(name)
    return result


def _image_problem(ref: str) -> str | None:
    """Why ``ref`` is not an acceptable pinned image reference, or ``None`` if it is."""
    match = _IMAGE_RE.fullmatch(ref)
    if match is None:
        return "not a valid image reference (lowercase name, then ':tag' or '@sha256:<hex>')"
    digest, tag = match.group("digest"), match.group("tag")
    if digest is not None:
        if not _SHA256_DIGEST_RE.fullmatch(digest):
            return "digest must be 'sha256:' followed by 64 lowercase hex digits"
        return None
    if tag is None:
        return "image must be pinned as name:tag or name@sha256:<64 hex> (no tag given)"
    if tag == "latest":
        return "image must be pinned: ':latest' is not a pinned tag"
    return None


def _image(p: _Problems, value: object, path: str) -> str | None:
    ref = _string(p, value, path, "an image reference (string)")
    if ref is None:
        return None
    problem = _image_problem(ref)
    if problem is not None:
        p.add(path, problem, ref)
        return None
    return ref


def _limits(p: _Problems, raw: Mapping[Any, Any], path: str, base: Limits) -> Limits:
    cpu, memory, pids = base.cpu, base.memory_bytes, base.pids
    if raw.get("cpu") is not None:
        value = raw["cpu"]
        where = _join(path, "cpu")
        if isinstance(value, bool) or not isinstance(value, int | float):
            p.add(where, f"must be a number of CPU cores > 0 and <= {CPU_MAX:g}", value)
        elif not math.isfinite(value) or not 0 < value <= CPU_MAX:
            p.add(where, f"must be > 0 and <= {CPU_MAX:g} CPU cores", value)
        else:
            cpu = float(value)
    if raw.get("memory") is not None:
        value = raw["memory"]
        where = _join(path, "memory")
        try:
            size = parse_size(value)
        except ValueError:
            p.add(
                where,
                "must be a size such as 512M or 2G (integer or decimal with a K/M/G/T "
                "suffix, binary units) or a whole number of bytes",
                value,
            )
        else:
            if size < MEMORY_MIN_BYTES:
                p.add(where, f"must be at least {format_size(MEMORY_MIN_BYTES)}", value)
            else:
                memory = size
    if raw.get("pids") is not None:
        value = raw["pids"]
        where = _join(path, "pids")
        if isinstance(value, bool) or not isinstance(value, int):
            p.add(where, f"must be an integer between {PIDS_MIN} and {PIDS_MAX}", value)
        elif not PIDS_MIN <= value <= PIDS_MAX:
            p.add(where, f"must be between {PIDS_MIN} and {PIDS_MAX}", value)
        else:
            pids = value
    return Limits(cpu=cpu, memory_bytes=memory, pids=pids)


def _is_within(path: Path, ancestor: Path) -> bool:
    return path == ancestor or ancestor in path.parents


def parse_enclave_config(data: object, source: str = "<string>") -> EnclaveConfig:
    """Validate already-parsed config data (e.g. from ``yaml.safe_load``).

    Raises :class:`EnclaveConfigError` listing every problem found.  Prefer
    :func:`load_enclave_config` (files) or :func:`parse_enclave_yaml` (text): they also
    refuse duplicate YAML keys, which cannot be detected once the data is a ``dict``.
    """
    p = _Problems()
    if data is None:
        p.add(_TOP, "the config is empty; expected a mapping with at least a 'projects' key")
        raise EnclaveConfigError(p.items, source)
    if not isinstance(data, Mapping):
        p.add(_TOP, "must be a mapping with at least a 'projects' key", data)
        raise EnclaveConfigError(p.items, source)
    _check_keys(p, data, "", _TOP_KEYS)

    # enclave:
    enclave = _section(p, data, "enclave", "", _ENCLAVE_KEYS)
    name: str | None = DEFAULT_NAME
    if enclave.get("name") is not None:
        name = _string(p, enclave["name"], "enclave.name")
        if name is not None and not _NAME_RE.fullmatch(name):
            p.add("enclave.name", f"must match {NAME_PATTERN}", name)
            name = None
    state_dir: Path | None = DEFAULT_STATE_DIR
    if enclave.get("state_dir") is not None:
        state_dir = _abs_path(p, enclave["state_dir"], "enclave.state_dir")
        if state_dir is not None and state_dir == Path("/"):
            p.add("enclave.state_dir", "must not be the filesystem root", str(state_dir))
            state_dir = None
    uid_base, uid_count = 2_000_000, 1_000_000
    for key in ("uid_base", "uid_count"):
        value = enclave.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            p.add(f"enclave.{key}", "must be a positive whole number", value)
        elif key == "uid_base":
            uid_base = value
        else:
            uid_count = value
    if uid_base < 65_536:
        p.add("enclave.uid_base", "must be at least 65536 (host accounts live below)", uid_base)
    elif uid_base + uid_count > 2**32 - 1:
        p.add("enclave.uid_count", "the range must end below 4294967295", uid_count)
    project_filesystems = "shared"
    if enclave.get("project_filesystems") is not None:
        value = enclave["project_filesystems"]
        if value not in PROJECT_FILESYSTEMS:
            p.add("enclave.project_filesystems", f"must be one of {PROJECT_FILESYSTEMS}", value)
        else:
            project_filesystems = value
    project_filesystem_size = 4 * 1024**3
    if enclave.get("project_filesystem_size") is not None:
        try:
            project_filesystem_size = parse_size(enclave["project_filesystem_size"])
        except (ValueError, TypeError) as err:
            p.add("enclave.project_filesystem_size", str(err), enclave["project_filesystem_size"])
        else:
            if project_filesystem_size < 64 * 1024**2:
                p.add(
                    "enclave.project_filesystem_size",
                    "must be at least 64M",
                    enclave["project_filesystem_size"],
                )

    # images:
    images = _section(p, data, "images", "", _IMAGES_KEYS)
    raw_allowed = images.get("allowed")
    allowed: list[str] | None = None  # the valid entries
    # Every string entry, valid or not, for membership checks; None if images.allowed itself
    # is unusable (then membership is not checked, to avoid follow-on noise).
    allowed_raw_strings: list[str] | None = None
    if raw_allowed is not None:
        if not isinstance(raw_allowed, list):
            p.add("images.allowed", "must be a list of pinned image references", raw_allowed)
        elif not raw_allowed:
            p.add("images.allowed", "must list at least one image", raw_allowed)
        else:
            allowed, allowed_raw_strings = [], []
            for i, item in enumerate(raw_allowed):
                where = f"images.allowed[{i}]"
                if isinstance(item, str):
                    if item in allowed_raw_strings:
                        p.add(where, "duplicate image", item)
                        continue
                    allowed_raw_strings.append(item)
                ref = _image(p, item, where)
                if ref is not None:
                    allowed.append(ref)
    default_image: str | None = None
    if images.get("default") is not None:
        raw_default = images["default"]
        if raw_allowed is None:
            default_image = _image(p, raw_default, "images.default")
            if default_image is not None:
                allowed = [default_image]
                allowed_raw_strings = [default_image]
        else:
            default_image = _string(p, raw_default, "images.default", "an image reference")
            if allowed_raw_strings is None:
                default_image = None
            elif default_image is not None and default_image not in allowed_raw_strings:
                p.add("images.default", "must be one of images.allowed", default_image)
                default_image = None
    elif raw_allowed is None:
        allowed, allowed_raw_strings = [DEFAULT_IMAGE], [DEFAULT_IMAGE]
        default_image = DEFAULT_IMAGE
    elif allowed_raw_strings:
        default_image = allowed_raw_strings[0]

    # limits:
    limits_raw = _section(p, data, "limits", "", _LIMITS_KEYS)
    default_limits = _limits(p, limits_raw, "limits", DEFAULT_LIMITS)

    # output_checkers:, review:
    output_checkers = _usernames(p, data.get("output_checkers"), "output_checkers")
    review_raw = _section(p, data, "review", "", _REVIEW_KEYS)
    reviews_required = DEFAULT_REVIEWS_REQUIRED
    if review_raw.get("reviews_required") is not None:
        value = review_raw["reviews_required"]
        where = "review.reviews_required"
        if isinstance(value, bool) or not isinstance(value, int):
            p.add(where, f"must be an integer between {REVIEWS_MIN} and {REVIEWS_MAX}", value)
        elif not REVIEWS_MIN <= value <= REVIEWS_MAX:
            p.add(where, f"must be between {REVIEWS_MIN} and {REVIEWS_MAX}", value)
        else:
            reviews_required = value
    reexecution_seconds = ReviewPolicy.reexecution_seconds
    if review_raw.get("reexecution_seconds") is not None:
        value = review_raw["reexecution_seconds"]
        where = "review.reexecution_seconds"
        bounds = f"{REEXECUTION_SECONDS_MIN} and {REEXECUTION_SECONDS_MAX}"
        if isinstance(value, bool) or not isinstance(value, int):
            p.add(where, f"must be a whole number of seconds between {bounds}", value)
        elif not REEXECUTION_SECONDS_MIN <= value <= REEXECUTION_SECONDS_MAX:
            p.add(where, f"must be between {bounds} seconds", value)
        else:
            reexecution_seconds = value

    identity = _identity(p, _section(p, data, "identity", "", _IDENTITY_KEYS))
    culling = _culling(p, _section(p, data, "culling", "", _CULLING_KEYS))
    notifications = _notifications(p, _section(p, data, "notifications", "", _NOTIFICATIONS_KEYS))

    # projects:
    projects: list[Project] = []
    raw_projects = data.get("projects")
    if raw_projects is None:
        p.add("projects", "required: define at least one project")
    elif not isinstance(raw_projects, Mapping):
        p.add("projects", "must be a mapping of project slug to project", raw_projects)
    elif not raw_projects:
        p.add("projects", "at least one project is required", raw_projects)
    else:
        for slug, raw in raw_projects.items():
            project = _project(
                p,
                slug,
                raw,
                state_dir=state_dir,
                allowed_raw_strings=allowed_raw_strings,
                default_image=default_image,
                default_limits=default_limits,
            )
            if project is not None:
                projects.append(project)

    if p.items:
        raise EnclaveConfigError(p.items, source)
    assert name is not None and state_dir is not None and default_image is not None
    assert allowed is not None
    return EnclaveConfig(
        name=name,
        state_dir=state_dir,
        allowed_images=tuple(allowed),
        default_image=default_image,
        projects=_FrozenMapping((proj.slug, proj) for proj in projects),
        output_checkers=frozenset(output_checkers),
        review=ReviewPolicy(
            reviews_required=reviews_required, reexecution_seconds=reexecution_seconds
        ),
        source=source,
        identity=identity,
        culling=culling,
        notifications=notifications,
        uid_base=uid_base,
        uid_count=uid_count,
        project_filesystems=project_filesystems,
        project_filesystem_size=project_filesystem_size,
    )


def _group_names(p: _Problems, value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        p.add(path, "must be a list of group names", value)
        return ()
    names: list[str] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(item, str) or not item.strip() or item != item.strip():
            p.add(where, "must be a non-empty group name without surrounding spaces", item)
        elif any(unicodedata.category(ch)[0] == "C" for ch in item):
            p.add(where, "must not contain control characters", item)
        elif item in names:
            p.add(where, "duplicate group", item)
        else:
            names.append(item)
    return tuple(names)


def _seconds(p: _Problems, raw: Mapping[Any, Any], key: str, path: str, default: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        p.add(f"{path}.{key}", "must be a whole number of seconds (0 or more)", value)
        return default
    return value


def _url(p: _Problems, value: object, path: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s]+", value):
        p.add(path, "must be an http(s) URL", value)
        return ""
    return value


def _identity(p: _Problems, raw: Mapping[Any, Any]) -> IdentityConfig:
    base = IdentityConfig()
    provider = raw.get("provider", base.provider)
    if provider not in PROVIDERS:
        p.add("identity.provider", f"must be one of {', '.join(PROVIDERS)}", provider)
        provider = base.provider
    checker_groups = base.checker_groups
    if raw.get("checker_groups") is not None:
        checker_groups = _group_names(p, raw["checker_groups"], "identity.checker_groups")
    admin_groups = base.admin_groups
    if raw.get("admin_groups") is not None:
        admin_groups = _group_names(p, raw["admin_groups"], "identity.admin_groups")
    access = _group_names(p, raw.get("server_access_groups"), "identity.server_access_groups")
    minutes = raw.get("break_glass_minutes", base.break_glass_minutes)
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int)
        or not 1 <= minutes <= BREAK_GLASS_MAX_MINUTES
    ):
        p.add(
            "identity.break_glass_minutes",
            f"must be a whole number of minutes from 1 to {BREAK_GLASS_MAX_MINUTES}",
            minutes,
        )
        minutes = base.break_glass_minutes
    oidc = None
    raw_oidc = _section(p, raw, "oidc", "identity", _OIDC_KEYS)
    if provider == "oidc":
        for key in _OIDC_REQUIRED:
            if raw_oidc.get(key) is None:
                p.add(f"identity.oidc.{key}", "required when identity.provider is oidc")
        if all(raw_oidc.get(key) is not None for key in _OIDC_REQUIRED):
            where = "identity.oidc"
            scopes = raw_oidc.get("scopes", ["openid", "profile", "email", "groups"])
            if not isinstance(scopes, list) or "openid" not in scopes:
                p.add(f"{where}.scopes", "must be a list that includes 'openid'", scopes)
                scopes = ["openid"]
            oidc = OidcSettings(
                authorize_url=_url(p, raw_oidc["authorize_url"], f"{where}.authorize_url"),
                token_url=_url(p, raw_oidc["token_url"], f"{where}.token_url"),
                userdata_url=_url(p, raw_oidc["userdata_url"], f"{where}.userdata_url"),
                logout_url=(
                    _url(p, raw_oidc["logout_url"], f"{where}.logout_url")
                    if raw_oidc.get("logout_url") is not None
                    else ""
                ),
                client_id=_string(p, raw_oidc["client_id"], f"{where}.client_id") or "",
                client_secret_file=_abs_path(
                    p, raw_oidc["client_secret_file"], f"{where}.client_secret_file"
                )
                or Path("/"),
                username_claim=_string(
                    p,
                    raw_oidc.get("username_claim", "preferred_username"),
                    f"{where}.username_claim",
                )
                or "preferred_username",
                groups_claim=_string(
                    p, raw_oidc.get("groups_claim", "groups"), f"{where}.groups_claim"
                )
                or "groups",
                scopes=tuple(str(s) for s in scopes),
            )
    elif raw_oidc:
        p.add("identity.oidc", "only used when identity.provider is oidc", dict(raw_oidc))
    return IdentityConfig(
        provider=provider,
        checker_groups=checker_groups,
        admin_groups=admin_groups,
        server_access_groups=access,
        break_glass_minutes=minutes,
        refresh_seconds=_seconds(p, raw, "refresh_seconds", "identity", base.refresh_seconds),
        membership_check_seconds=_seconds(
            p, raw, "membership_check_seconds", "identity", base.membership_check_seconds
        ),
        oidc=oidc,
    )


def _notifications(p: _Problems, raw: Mapping[Any, Any]) -> NotificationSettings:
    smtp = raw.get("smtp")
    if smtp is not None and not isinstance(smtp, Mapping):
        p.add("notifications.smtp", "must be a mapping (host, port, sender, ...)", smtp)
        smtp = None
    template = raw.get("address_template", "")
    if smtp is not None and "host" not in smtp:
        p.add("notifications.smtp.host", "required when notifications.smtp is given")
    if smtp is not None and (not isinstance(template, str) or "{username}" not in template):
        p.add(
            "notifications.address_template",
            "required with smtp: a text with {username}, e.g. '{username}@hospital.example'",
            template,
        )
        template = ""
    return NotificationSettings(
        smtp=dict(smtp) if smtp is not None else None,
        address_template=template if isinstance(template, str) else "",
    )


def _culling(p: _Problems, raw: Mapping[Any, Any]) -> CullingPolicy:
    base = CullingPolicy()
    return CullingPolicy(
        idle_seconds=_seconds(p, raw, "idle_seconds", "culling", base.idle_seconds),
        max_age_seconds=_seconds(p, raw, "max_age_seconds", "culling", base.max_age_seconds),
    )


def _project(
    p: _Problems,
    slug: object,
    raw: object,
    *,
    state_dir: Path | None,
    allowed_raw_strings: list[str] | None,
    default_image: str | None,
    default_limits: Limits,
) -> Project | None:
    path = _join("projects", slug)
    ok = True
    if not isinstance(slug, str):
        p.add(path, "project slug must be a string", slug)
        ok = False
    elif not _is_slug(slug):
        p.add(
            path,
            f"invalid project slug: must match {SLUG_PATTERN} and not end with '-'",
            slug,
        )
        ok = False
    if not isinstance(raw, Mapping):
        p.add(path, "must be a mapping with at least a 'title'", raw)
        return None
    _check_keys(p, raw, path, _PROJECT_KEYS)

    title = raw.get("title")
    if title is None:
        p.add(f"{path}.title", "required (a non-empty string)")
        ok = False
    elif not isinstance(title, str) or not title.strip():
        p.add(f"{path}.title", "must be a non-empty string", title)
        ok = False
    elif any(unicodedata.category(ch) in _BAD_TITLE_CATEGORIES for ch in title):
        p.add(
            f"{path}.title",
            "must not contain control, formatting or line-break characters",
            title,
        )
        ok = False

    n_problems = len(p.items)
    members = _usernames(p, raw.get("members"), f"{path}.members")
    # Two members must not share a container name ('a@b' and 'a-at-b' both give 'a-at-b').
    by_container: dict[str, str] = {}
    for member in members:
        safe = docker_safe_name(member)
        if safe in by_container:
            p.add(
                f"{path}.members",
                f"usernames {by_container[safe]!r} and {member!r} would get the same "
                f"container name suffix {safe!r}",
            )
        else:
            by_container[safe] = member
    ok = ok and len(p.items) == n_problems

    data_path: Path | None = None
    if isinstance(slug, str) and state_dir is not None:
        data_path = state_dir / "projects" / slug / "data"
    if raw.get("data_path") is not None:
        data_path = _abs_path(p, raw["data_path"], f"{path}.data_path")
        if data_path is None:
            ok = False
        elif state_dir is not None and isinstance(slug, str):
            own = state_dir / "projects" / slug / "data"
            if _is_within(state_dir, data_path):
                p.add(
                    f"{path}.data_path",
                    f"must not contain the state directory {state_dir}",
                    str(data_path),
                )
                ok = False
            elif _is_within(data_path, state_dir) and not _is_within(data_path, own):
                p.add(
                    f"{path}.data_path",
                    f"inside the state directory it must be under {own}",
                    str(data_path),
                )
                ok = False

    image = default_image
    if raw.get("image") is not None:
        image = _string(p, raw["image"], f"{path}.image", "an image reference (string)")
        if allowed_raw_strings is None:
            image = None  # images.allowed is broken and already reported
        elif image is not None and image not in allowed_raw_strings:
            allowed_list = ", ".join(allowed_raw_strings)
            p.add(f"{path}.image", f"not in images.allowed ({allowed_list})", image)
            image = None
        if image is None:
            ok = False

    groups: tuple[str, ...] = (project_hub_group(slug),) if isinstance(slug, str) else ()
    if raw.get("groups") is not None:
        n_before = len(p.items)
        groups = _group_names(p, raw["groups"], f"{path}.groups")
        ok = ok and len(p.items) == n_before

    n_problems = len(p.items)
    limits_raw = _section(p, raw, "limits", path, _LIMITS_KEYS)
    limits = _limits(p, limits_raw, f"{path}.limits", default_limits)
    ok = ok and len(p.items) == n_problems

    if not ok or data_path is None or image is None:
        return None
    assert isinstance(slug, str) and isinstance(title, str)
    return Project(
        slug=slug,
        title=title,
        members=frozenset(members),
        data_path=data_path,
        image=image,
        limits=limits,
        groups=groups,
    )


# --------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_FILE_BYTES = 10 * MIB


class _StrictLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that records duplicate mapping keys (with paths and lines).

    PyYAML silently keeps the last of duplicated keys; in a security configuration a
    duplicated ``members:`` or project slug is almost certainly a mistake.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_problems: list[str] = []
        self._paths: dict[int, str] = {}

    def _index_paths(self, root: yaml.Node) -> None:
        # Remember the dotted path of every mapping node (iteratively, aliases visited once).
        stack: list[tuple[yaml.Node, str]] = [(root, "")]
        while stack:
            node, path = stack.pop()
            if id(node) in self._paths:
                continue
            self._paths[id(node)] = path
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    stack.append((value_node, _join(path, key)))
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    stack.append((item, f"{path}[{i}]"))

    def construct_document(self, node: yaml.Node) -> Any:
        self._index_paths(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            parent = self._paths.get(id(node), "")
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class reports it
                    continue
                if first is not None:
                    self.duplicate_problems.append(
                        f"{_join(parent, key)}: duplicate key on line {line} "
                        f"(first defined on line {first})"
                    )
                else:
                    seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_error_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        text = f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {exc.problem}"
        if exc.context:
            context = exc.context
            if exc.context_mark is not None:
                context += f" on line {exc.context_mark.line + 1}"
            text += f" ({context})"
        return text
    return f"invalid YAML: {exc}"


def parse_enclave_yaml(text: str, source: str = "<string>") -> EnclaveConfig:
    """Parse and validate enclave config YAML text (duplicate keys are refused).

    Raises :class:`EnclaveConfigError`; YAML syntax errors are reported with their line
    and column, duplicate keys with both line numbers.
    """
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise EnclaveConfigError([_yaml_error_problem(exc)], source) from None
    finally:
        loader.dispose()
    duplicates = loader.duplicate_problems
    try:
        config = parse_enclave_config(data, source)
    except EnclaveConfigError as exc:
        raise EnclaveConfigError(duplicates + exc.problems, source) from None
    if duplicates:
        raise EnclaveConfigError(duplicates, source)
    return config


def load_enclave_config(path: str | os.PathLike[str]) -> EnclaveConfig:
    """Read, parse and validate the enclave config file at ``path``.

    A missing or unreadable file, a file that is not UTF-8, a YAML syntax error (with its
    line), a duplicate key, a top level that is not a mapping, and every invalid field
    raise :class:`EnclaveConfigError` naming the file.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise EnclaveConfigError(["file not found"], source) from None
    except IsADirectoryError:
        raise EnclaveConfigError(["is a directory, not a file"], source) from None
    except PermissionError:
        raise EnclaveConfigError(["cannot read file: permission denied"], source) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise EnclaveConfigError([f"cannot read file: {reason}"], source) from None
    if len(raw) > _MAX_FILE_BYTES:
        limit = format_size(_MAX_FILE_BYTES)
        raise EnclaveConfigError([f"file is larger than {limit}"], source)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EnclaveConfigError(
            [f"file is not valid UTF-8 (byte offset {exc.start})"], source
        ) from None
    return parse_enclave_yaml(text, source)


def dump_enclave_config(cfg: EnclaveConfig) -> str:
    """Render ``cfg`` as YAML that reads back to an equal config.

    Every project is written fully resolved (``data_path``, ``image`` and all ``limits``
    explicit), so the output also documents what the hub actually uses.  The top-level
    ``limits`` section is therefore not written.
    """
    projects: dict[str, Any] = {}
    for slug, proj in cfg.projects.items():
        projects[slug] = {
            "title": proj.title,
            "members": sorted(proj.members),
            "groups": list(proj.groups),
            "data_path": str(proj.data_path),
            "image": proj.image,
            "limits": {
                "cpu": float(proj.limits.cpu),
                "memory": format_size(proj.limits.memory_bytes),
                "pids": proj.limits.pids,
            },
        }
    doc = {
        "enclave": {
            "name": cfg.name,
            "state_dir": str(cfg.state_dir),
            **({"uid_base": cfg.uid_base} if cfg.uid_base != 2_000_000 else {}),
            **({"uid_count": cfg.uid_count} if cfg.uid_count != 1_000_000 else {}),
            **(
                {"project_filesystems": cfg.project_filesystems}
                if cfg.project_filesystems != "shared"
                else {}
            ),
            **(
                {"project_filesystem_size": format_size(cfg.project_filesystem_size)}
                if cfg.project_filesystem_size != 4 * 1024**3
                else {}
            ),
        },
        "images": {"allowed": list(cfg.allowed_images), "default": cfg.default_image},
        "projects": projects,
        "output_checkers": sorted(cfg.output_checkers),
        "review": {
            "reviews_required": cfg.review.reviews_required,
            "reexecution_seconds": cfg.review.reexecution_seconds,
        },
        "identity": _identity_doc(cfg.identity),
        "culling": {
            "idle_seconds": cfg.culling.idle_seconds,
            "max_age_seconds": cfg.culling.max_age_seconds,
        },
    }
    if cfg.notifications.smtp is not None:
        doc["notifications"] = {
            "smtp": dict(cfg.notifications.smtp),
            "address_template": cfg.notifications.address_template,
        }
    body = yaml.safe_dump(
        doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return "# Havre enclave configuration (written by dump_enclave_config)\n" + body


def _identity_doc(ident: IdentityConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "provider": ident.provider,
        "checker_groups": list(ident.checker_groups),
        "admin_groups": list(ident.admin_groups),
        "server_access_groups": list(ident.server_access_groups),
        "break_glass_minutes": ident.break_glass_minutes,
        "refresh_seconds": ident.refresh_seconds,
        "membership_check_seconds": ident.membership_check_seconds,
    }
    if ident.oidc is not None:
        o = ident.oidc
        doc["oidc"] = {
            "authorize_url": o.authorize_url,
            "token_url": o.token_url,
            "userdata_url": o.userdata_url,
            "client_id": o.client_id,
            "client_secret_file": str(o.client_secret_file),
            "username_claim": o.username_claim,
            "groups_claim": o.groups_claim,
            "scopes": list(o.scopes),
        }
        if o.logout_url:
            doc["oidc"]["logout_url"] = o.logout_url
    return doc
