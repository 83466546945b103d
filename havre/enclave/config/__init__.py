"""The enclave configuration file: its model, loading, strict validation and derived names.

One YAML file describes a Havre enclave: its name, its state directory, the allow-list of
notebook images, default resource limits, the projects (with their members), the output
checkers and the output review policy.  The hub, the spawn broker, the egress service and the
re-execution runner all read it.

The file is validated when it is loaded.  Validation collects *every* problem rather than
stopping at the first one, and each problem names the offending field by its dotted path
(``projects.cardio.members[1]``) together with the offending value, e.g.::

    invalid enclave config /etc/havre/enclave.yaml:
      - projects.cardio.title: must be a non-empty string (got '')
      - limits.memory: must be at least 256M (got '128M')

Unknown keys are refused with a did-you-mean (typo protection), duplicate YAML mapping keys
are refused (with their line numbers), and YAML 1.1 booleans (``yes``/``no``/``on``/``off``)
are not accepted where a string is expected.

Modules: :mod:`.model` (the objects), :mod:`.sizes`, :mod:`.problems` (the problems
collector every Havre config checker uses), :mod:`.validation`, :mod:`.loading` (YAML in and
out).  Standard library and PyYAML only.
"""

from havre.enclave.config.loading import (
    dump_enclave_config,
    load_enclave_config,
    parse_enclave_yaml,
)
from havre.enclave.config.model import (
    ACCESS_BROWSER,
    ACCESS_DESKTOP,
    ACCESS_TIERS,
    ADMINS_HUB_GROUP,
    BREAK_GLASS_HUB_GROUP,
    CHECKERS_HUB_GROUP,
    DEFAULT_DESKTOP_IMAGE,
    DEFAULT_DESKTOP_LIMITS,
    DEFAULT_IMAGE,
    DEFAULT_LIMITS,
    DEFAULT_NAME,
    DEFAULT_REVIEWS_REQUIRED,
    DEFAULT_STATE_DIR,
    DESKTOP_PASTE_INBOUND_TEXT,
    DESKTOP_PASTE_MODES,
    DESKTOP_PASTE_NONE,
    NAME_PATTERN,
    SERVER_ACCESS_HUB_GROUP,
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
    UnknownProjectError,
    docker_safe_name,
    group_matches,
    project_hub_group,
)
from havre.enclave.config.problems import ConfigProblemsError, Problems
from havre.enclave.config.sizes import GIB, KIB, MIB, TIB, format_size, parse_size
from havre.enclave.config.validation import (
    BREAK_GLASS_MAX_MINUTES,
    PROJECT_FILESYSTEMS,
    PROVIDERS,
    parse_enclave_config,
)

__all__ = [
    "ACCESS_BROWSER",
    "ACCESS_DESKTOP",
    "ACCESS_TIERS",
    "ADMINS_HUB_GROUP",
    "BREAK_GLASS_HUB_GROUP",
    "BREAK_GLASS_MAX_MINUTES",
    "CHECKERS_HUB_GROUP",
    "DEFAULT_DESKTOP_IMAGE",
    "DEFAULT_DESKTOP_LIMITS",
    "DEFAULT_IMAGE",
    "DEFAULT_LIMITS",
    "DEFAULT_NAME",
    "DEFAULT_REVIEWS_REQUIRED",
    "DEFAULT_STATE_DIR",
    "DESKTOP_PASTE_INBOUND_TEXT",
    "DESKTOP_PASTE_MODES",
    "DESKTOP_PASTE_NONE",
    "GIB",
    "KIB",
    "MIB",
    "NAME_PATTERN",
    "PROJECT_FILESYSTEMS",
    "PROVIDERS",
    "SERVER_ACCESS_HUB_GROUP",
    "SLUG_PATTERN",
    "TIB",
    "USERNAME_PATTERN",
    "ConfigProblemsError",
    "CullingPolicy",
    "EnclaveConfig",
    "EnclaveConfigError",
    "IdentityConfig",
    "Limits",
    "MonitoringSettings",
    "NotificationSettings",
    "OidcSettings",
    "Problems",
    "Project",
    "ReviewPolicy",
    "UnknownProjectError",
    "docker_safe_name",
    "dump_enclave_config",
    "format_size",
    "group_matches",
    "load_enclave_config",
    "parse_enclave_config",
    "parse_enclave_yaml",
    "parse_size",
    "project_hub_group",
]
