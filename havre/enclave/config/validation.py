"""Checking an enclave config: every problem at once, each with its dotted path.

:func:`parse_enclave_config` takes the data of a YAML document and returns a valid
:class:`~havre.enclave.config.model.EnclaveConfig` or raises
:class:`~havre.enclave.config.model.EnclaveConfigError` listing every problem (see
:mod:`havre.enclave.config.problems` for their form).  Rules beyond types and bounds:

* unknown keys are refused, with the closest allowed key offered;
* images must be pinned (``name:tag`` other than ``latest``, or ``name@sha256:<hex>``) and
  every project image must be on ``images.allowed``;
* a project's data folder must not contain the state folder, and inside the state folder it
  must be the project's own;
* two members of one project must not get the same container name.

Standard library only.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from havre.enclave.config.cluster import parse_cluster
from havre.enclave.config.model import (
    _NAME_RE,
    _USERNAME_RE,
    ACCESS_BROWSER,
    ACCESS_TIERS,
    DEFAULT_DESKTOP_IMAGE,
    DEFAULT_DESKTOP_LIMITS,
    DEFAULT_IMAGE,
    DEFAULT_LIMITS,
    DEFAULT_NAME,
    DEFAULT_REVIEWS_REQUIRED,
    DEFAULT_STATE_DIR,
    DESKTOP_PASTE_MODES,
    DESKTOP_PASTE_NONE,
    NAME_PATTERN,
    SLUG_PATTERN,
    USERNAME_PATTERN,
    CullingPolicy,
    EnclaveConfig,
    EnclaveConfigError,
    IdentityConfig,
    Limits,
    MonitoringSettings,
    NotificationSettings,
    OidcSettings,
    Project,
    ReviewPolicy,
    _FrozenMapping,
    _is_slug,
    docker_safe_name,
    project_hub_group,
)
from havre.enclave.config.problems import Problems, join_path
from havre.enclave.config.sizes import MIB, format_size, parse_size

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

CPU_MAX = 64.0
MEMORY_MIN_BYTES = 256 * MIB
PIDS_MIN = 32
PIDS_MAX = 65536
REVIEWS_MIN = 1
REVIEWS_MAX = 5

_TOP_KEYS = (
    "enclave",
    "images",
    "limits",
    "desktop_limits",
    "projects",
    "output_checkers",
    "review",
    "identity",
    "culling",
    "notifications",
    "logging",
    "monitoring",
    "cluster",
)
_LOGGING_KEYS = ("format",)
_MONITORING_KEYS = ("scrape_from", "publish")
_NOTIFICATIONS_KEYS = ("smtp", "address_template")
_ENCLAVE_KEYS = (
    "name",
    "state_dir",
    "uid_base",
    "uid_count",
    "project_filesystems",
    "project_filesystem_size",
)
#: ``logging.format``: the services' log lines (``havre.enclave.logs``); the first is the default.
LOG_FORMATS = ("json", "text")
#: ``enclave.project_filesystems``: one shared host filesystem, or a loop-mounted image each.
PROJECT_FILESYSTEMS = ("shared", "loop")
_IMAGES_KEYS = ("allowed", "default", "desktop")
_LIMITS_KEYS = ("cpu", "memory", "pids")
_PROJECT_KEYS = (
    "title",
    "members",
    "groups",
    "data_path",
    "image",
    "limits",
    "access",
    "desktop_limits",
    "desktop_paste",
)
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
#: The longest break-glass window a config may allow, in minutes (one working day).
BREAK_GLASS_MAX_MINUTES = 480

_REVIEW_KEYS = ("reviews_required", "reexecution_seconds")
#: the bounds of review.reexecution_seconds
REEXECUTION_SECONDS_MIN, REEXECUTION_SECONDS_MAX = 10, 24 * 3600

_TOP = "top level"

# Control, format (e.g. bidi overrides), surrogate and line/paragraph separator characters.
_BAD_TITLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _string(p: Problems, value: object, path: str, what: str = "a string") -> str | None:
    if not isinstance(value, str):
        p.add(path, f"must be {what}", value)
        return None
    return value


def _abs_path(p: Problems, value: object, path: str) -> Path | None:
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


def _username(p: Problems, value: object, path: str) -> str | None:
    name = _string(p, value, path, "a username (string)")
    if name is None:
        return None
    if not _USERNAME_RE.fullmatch(name):
        p.add(path, f"invalid username: must match {USERNAME_PATTERN}", name)
        return None
    return name


def _usernames(p: Problems, value: object, path: str) -> list[str]:
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


def _image(p: Problems, value: object, path: str) -> str | None:
    ref = _string(p, value, path, "an image reference (string)")
    if ref is None:
        return None
    problem = _image_problem(ref)
    if problem is not None:
        p.add(path, problem, ref)
        return None
    return ref


def _limits(p: Problems, raw: Mapping[Any, Any], path: str, base: Limits) -> Limits:
    cpu, memory, pids = base.cpu, base.memory_bytes, base.pids
    if raw.get("cpu") is not None:
        value = raw["cpu"]
        where = join_path(path, "cpu")
        if isinstance(value, bool) or not isinstance(value, int | float):
            p.add(where, f"must be a number of CPU cores > 0 and <= {CPU_MAX:g}", value)
        elif not math.isfinite(value) or not 0 < value <= CPU_MAX:
            p.add(where, f"must be > 0 and <= {CPU_MAX:g} CPU cores", value)
        else:
            cpu = float(value)
    if raw.get("memory") is not None:
        value = raw["memory"]
        where = join_path(path, "memory")
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
        where = join_path(path, "pids")
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
    p = Problems()
    if data is None:
        p.add(_TOP, "the config is empty; expected a mapping with at least a 'projects' key")
        raise EnclaveConfigError(p.items, source)
    if not isinstance(data, Mapping):
        p.add(_TOP, "must be a mapping with at least a 'projects' key", data)
        raise EnclaveConfigError(p.items, source)
    p.unknown_keys(data, "", _TOP_KEYS)

    # enclave:
    enclave = p.section(data, "enclave", "", _ENCLAVE_KEYS)
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
    images = p.section(data, "images", "", _IMAGES_KEYS)
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

    # images.desktop: the remote desktops' image (pinned like the others; it is Havre's own,
    # not a researcher's choice, so it is not on images.allowed)
    desktop_image: str | None = DEFAULT_DESKTOP_IMAGE
    if images.get("desktop") is not None:
        desktop_image = _image(p, images["desktop"], "images.desktop")

    # limits:
    limits_raw = p.section(data, "limits", "", _LIMITS_KEYS)
    default_limits = _limits(p, limits_raw, "limits", DEFAULT_LIMITS)
    # desktop_limits: each remote desktop's own (it runs Chromium, not the researcher's code)
    desktop_raw = p.section(data, "desktop_limits", "", _LIMITS_KEYS)
    default_desktop_limits = _limits(p, desktop_raw, "desktop_limits", DEFAULT_DESKTOP_LIMITS)

    # output_checkers:, review:
    output_checkers = _usernames(p, data.get("output_checkers"), "output_checkers")
    review_raw = p.section(data, "review", "", _REVIEW_KEYS)
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

    identity = _identity(p, p.section(data, "identity", "", _IDENTITY_KEYS))
    culling = _culling(p, p.section(data, "culling", "", _CULLING_KEYS))
    notifications = _notifications(p, p.section(data, "notifications", "", _NOTIFICATIONS_KEYS))
    log_format = _log_format(p, p.section(data, "logging", "", _LOGGING_KEYS))
    monitoring = _monitoring(p, p.section(data, "monitoring", "", _MONITORING_KEYS))

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
                default_desktop_limits=default_desktop_limits,
            )
            if project is not None:
                projects.append(project)

    cluster = parse_cluster(p, data.get("cluster"), raw_projects)
    if cluster is not None:
        for project in projects:
            if project.desktop:
                # a cluster runs servers as Swarm services; a desktop must share its server's
                # network namespace, which services can't: the server would be routed to the
                # researcher's browser, the exit the desktop tier exists to close
                p.add(
                    f"projects.{project.slug}.access",
                    "pixels-only projects (access: desktop) run on one host only, not on a "
                    "cluster yet",
                    "desktop",
                )

    if p.items:
        raise EnclaveConfigError(p.items, source)
    assert name is not None and state_dir is not None and default_image is not None
    assert allowed is not None and desktop_image is not None
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
        monitoring=monitoring,
        uid_base=uid_base,
        uid_count=uid_count,
        project_filesystems=project_filesystems,
        project_filesystem_size=project_filesystem_size,
        log_format=log_format,
        cluster=cluster,
        desktop_image=desktop_image,
    )


def _group_names(p: Problems, value: object, path: str) -> tuple[str, ...]:
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


def _seconds(p: Problems, raw: Mapping[Any, Any], key: str, path: str, default: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        p.add(f"{path}.{key}", "must be a whole number of seconds (0 or more)", value)
        return default
    return value


def _url(p: Problems, value: object, path: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s]+", value):
        p.add(path, "must be an http(s) URL", value)
        return ""
    return value


def _identity(p: Problems, raw: Mapping[Any, Any]) -> IdentityConfig:
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
    raw_oidc = p.section(raw, "oidc", "identity", _OIDC_KEYS)
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


def _notifications(p: Problems, raw: Mapping[Any, Any]) -> NotificationSettings:
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


def _log_format(p: Problems, raw: Mapping[Any, Any]) -> str:
    value = raw.get("format")
    if value is None:
        return LOG_FORMATS[0]
    if value not in LOG_FORMATS:
        p.add(
            "logging.format",
            "must be json (one JSON object a line, for a log collector) or text",
            value,
        )
        return LOG_FORMATS[0]
    return str(value)


def _monitoring(p: Problems, raw: Mapping[Any, Any]) -> MonitoringSettings:
    raw_from = raw.get("scrape_from")
    given = [raw_from] if isinstance(raw_from, str) else raw_from
    networks: list[str] = []
    if given is not None and not isinstance(given, list):
        p.add("monitoring.scrape_from", "must be an address or network, or a list of them", given)
        given = []
    for item in given or []:
        try:
            networks.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            p.add(
                "monitoring.scrape_from",
                "must hold IP addresses or networks such as 127.0.0.1/32 or 10.1.2.0/24",
                item,
            )
    publish = raw.get("publish", "") or ""
    if publish:
        host, _, port = str(publish).rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
            ok = port.isdigit() and 1 <= int(port) <= 65535
        except ValueError:
            ok = False
        if not ok:
            p.add(
                "monitoring.publish",
                "must be a host address and port such as 127.0.0.1:9190",
                publish,
            )
            publish = ""
        elif not networks:
            p.add(
                "monitoring.publish",
                "publishes metrics nobody may read: set monitoring.scrape_from too",
                publish,
            )
    return MonitoringSettings(scrape_from=tuple(networks), publish=str(publish))


def _culling(p: Problems, raw: Mapping[Any, Any]) -> CullingPolicy:
    base = CullingPolicy()
    return CullingPolicy(
        idle_seconds=_seconds(p, raw, "idle_seconds", "culling", base.idle_seconds),
        max_age_seconds=_seconds(p, raw, "max_age_seconds", "culling", base.max_age_seconds),
    )


def _project(
    p: Problems,
    slug: object,
    raw: object,
    *,
    state_dir: Path | None,
    allowed_raw_strings: list[str] | None,
    default_image: str | None,
    default_limits: Limits,
    default_desktop_limits: Limits = DEFAULT_DESKTOP_LIMITS,
) -> Project | None:
    path = join_path("projects", slug)
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
    p.unknown_keys(raw, path, _PROJECT_KEYS)

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
    limits_raw = p.section(raw, "limits", path, _LIMITS_KEYS)
    limits = _limits(p, limits_raw, f"{path}.limits", default_limits)
    ok = ok and len(p.items) == n_problems

    access = _access(p, raw.get("access"), f"{path}.access")
    ok = ok and access is not None

    n_problems = len(p.items)
    desktop_limits = default_desktop_limits
    if raw.get("desktop_limits") is not None and access == ACCESS_BROWSER:
        p.add(
            f"{path}.desktop_limits",
            "only an 'access: desktop' project has remote desktops to limit (this project's "
            "access is browser): remove desktop_limits or set access: desktop",
        )
    else:
        desktop_raw = p.section(raw, "desktop_limits", path, _LIMITS_KEYS)
        desktop_limits = _limits(p, desktop_raw, f"{path}.desktop_limits", default_desktop_limits)
    ok = ok and len(p.items) == n_problems

    desktop_paste = _desktop_paste(p, raw.get("desktop_paste"), f"{path}.desktop_paste", access)
    ok = ok and desktop_paste is not None

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
        access=access or ACCESS_BROWSER,
        desktop_limits=desktop_limits,
        desktop_paste=desktop_paste or DESKTOP_PASTE_NONE,
    )


def _desktop_paste(p: Problems, value: object, path: str, access: str | None) -> str | None:
    """``projects.<slug>.desktop_paste``: one of :data:`DESKTOP_PASTE_MODES` (absent or null:
    none), for an ``access: desktop`` project only."""
    if value is None:
        return DESKTOP_PASTE_NONE
    if access == ACCESS_BROWSER:
        p.add(
            path,
            "only an 'access: desktop' project has remote desktops to paste into (this "
            "project's access is browser, whose researchers paste into JupyterLab in their own "
            "browser): remove desktop_paste or set access: desktop",
        )
        return None
    if isinstance(value, str) and value in DESKTOP_PASTE_MODES:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(
            value.strip().lower(), DESKTOP_PASTE_MODES, n=1, cutoff=0.5
        )
        if close:
            hint = f", did you mean {close[0]!r}?"
    p.add(
        path,
        f"must be {DESKTOP_PASTE_MODES[0]!r} (nothing pasted in, the default) or "
        f"{DESKTOP_PASTE_MODES[1]!r} (text pasted in, audited; nothing ever copied out){hint}",
        value,
    )
    return None


def _access(p: Problems, value: object, path: str) -> str | None:
    """``projects.<slug>.access``: one of :data:`ACCESS_TIERS` (absent or null: browser)."""
    if value is None:
        return ACCESS_BROWSER
    if isinstance(value, str) and value in ACCESS_TIERS:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value.strip().lower(), ACCESS_TIERS, n=1, cutoff=0.5)
        if close:
            hint = f", did you mean {close[0]!r}?"
    p.add(path, f"must be {ACCESS_TIERS[0]!r} or {ACCESS_TIERS[1]!r}{hint}", value)
    return None
