"""The enclave configuration's objects: projects, limits, identity, review, and the names and
paths derived from them.

Objects of this module are only built valid (:mod:`havre.enclave.config.validation` checks a
file before building one).  The path and name helpers re-check the *format* of their slug and
username arguments, so that no caller can make them escape the state directory or a Docker
name.

Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havre.enclave.config.cluster import ClusterConfig
from havre.enclave.config.problems import ConfigProblemsError
from havre.enclave.config.sizes import GIB

# --------------------------------------------------------------------------------------
# Grammar
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


#: ``projects.<slug>.access``: JupyterLab in the researcher's browser, or pixels only.
ACCESS_BROWSER = "browser"
ACCESS_DESKTOP = "desktop"
ACCESS_TIERS = (ACCESS_BROWSER, ACCESS_DESKTOP)
#: ``projects.<slug>.desktop_paste`` (``access: desktop`` only): nothing pasted into the
#: project's desktops (the default), or text pasted in from the researcher's computer, audited
#: (images/desktop/rfb_relay.py; docs/sysadmin/desktop.md). Nothing is ever copied out.
DESKTOP_PASTE_NONE = "none"
DESKTOP_PASTE_INBOUND_TEXT = "inbound-text"
DESKTOP_PASTE_MODES = (DESKTOP_PASTE_NONE, DESKTOP_PASTE_INBOUND_TEXT)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class EnclaveConfigError(ConfigProblemsError):
    """The enclave config file is missing, unreadable or invalid.

    ``problems`` lists every problem found, one string each, normally of the form
    ``"<dotted.path>: <what is wrong> (got <value!r>)"``.  ``str(err)`` is::

        invalid enclave config <source>:
          - <problem 1>
          - <problem 2>
    """

    what = "enclave config"


class UnknownProjectError(KeyError):
    """Raised by :meth:`EnclaveConfig.project` for a slug that is not configured."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown project"


# --------------------------------------------------------------------------------------
# The configuration objects
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container (a notebook server, or a remote desktop)."""

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
    #: How researchers reach the project's servers (:data:`ACCESS_TIERS`): ``"browser"``,
    #: JupyterLab in their own browser; ``"desktop"``, pixels only: a remote desktop inside
    #: the enclave shows JupyterLab (docs/architecture.md, "Access tiers").
    access: str = "browser"
    #: The limits of each of the project's remote desktops (``access: desktop`` only):
    #: ``projects.<slug>.desktop_limits`` over the top-level ``desktop_limits``.
    desktop_limits: Limits = field(default_factory=lambda: DEFAULT_DESKTOP_LIMITS)
    #: What may be pasted into the project's desktops (:data:`DESKTOP_PASTE_MODES`,
    #: ``access: desktop`` only): ``"none"``, or ``"inbound-text"`` (text only, audited).
    desktop_paste: str = DESKTOP_PASTE_NONE

    @property
    def desktop(self) -> bool:
        """Whether the project's servers are reached through a remote desktop only."""
        return self.access == ACCESS_DESKTOP


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
    timeout, ca_file) and validated in full by
    ``egress.notifications.smtp.parse_smtp_settings``; ``None`` means no e-mail.
    ``address_template`` turns a username into an address.
    """

    smtp: Mapping[str, Any] | None = None
    address_template: str = ""

    def __hash__(self) -> int:
        return hash((tuple(sorted((self.smtp or {}).items())), self.address_template))


@dataclass(frozen=True)
class MonitoringSettings:
    """Who may scrape the egress service's Prometheus metrics (``/metrics``).

    ``scrape_from``: the networks (CIDR, e.g. ``127.0.0.1/32``) whose addresses may read
    ``/metrics``; empty (the default) refuses everyone. ``publish``: ``host-address:port`` on
    which ``havre up`` publishes the egress container's metrics-only port (empty: not published).
    """

    scrape_from: tuple[str, ...] = ()
    publish: str = ""


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
#: The image of the remote desktops of ``access: desktop`` projects (``images.desktop``).
DEFAULT_DESKTOP_IMAGE = "havre/desktop:0.1.0"
DEFAULT_LIMITS = Limits(cpu=1.0, memory_bytes=2 * GIB, pids=512)
#: A remote desktop's (``desktop_limits``): Xvnc, the window manager, nginx, websockify and
#: Chromium showing JupyterLab; an idle one uses about 300 MiB (docs/sysadmin/broker.md).
DEFAULT_DESKTOP_LIMITS = Limits(cpu=1.0, memory_bytes=GIB, pids=512)
DEFAULT_REVIEWS_REQUIRED = 2


def docker_safe_name(text: str) -> str:
    """Make ``text`` usable inside a Docker object name.

    ``@`` becomes ``-at-`` and any other character outside ``[a-zA-Z0-9_.-]`` becomes ``-``.
    """
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text.replace("@", "-at-"))


def _is_slug(value: str) -> bool:
    return bool(_SLUG_RE.fullmatch(value)) and not value.endswith("-")


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
    monitoring: MonitoringSettings = MonitoringSettings()
    #: Havre's id range: a uid per (user, project) server and a gid per project
    #: (havre/enclave/identities.py); no host account may use it.
    uid_base: int = 2_000_000
    uid_count: int = 1_000_000
    #: "shared": homes and outputs on the state folder's filesystem; "loop": a loop-mounted
    #: ext4 image per project (docs/sysadmin/enclave-config.md).
    project_filesystems: str = "shared"
    #: Size of each project's filesystem image with "loop" (allocated on the host up front).
    project_filesystem_size: int = 4 * 1024**3
    #: The services' log format (``logging.format``): "json" lines for a log collector, or
    #: "text"; the stack launcher hands it to every service (havre/enclave/logs.py).
    log_format: str = "json"
    #: None: one Docker host; else the enclave on a Swarm cluster (``config/cluster.py``)
    cluster: ClusterConfig | None = None
    #: The image of ``access: desktop`` projects' remote desktops (``images.desktop``).
    desktop_image: str = DEFAULT_DESKTOP_IMAGE

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

    def desktop_container_name(self, slug: str, username: str) -> str:
        """The remote desktop of ``username`` in an ``access: desktop`` project ``slug``:
        ``<name>-desk-<slug>-<user>`` (the same user-name rule as :meth:`container_name`)."""
        _require_slug(slug)
        return f"{self.name}-desk-{slug}-{docker_safe_name(_require_username(username))}"
