"""Reading the enclave config file (strict YAML) and writing one back.

The file is refused, with every problem listed, when it is missing, unreadable, larger than
10 MiB, not UTF-8, not YAML, has a duplicated mapping key (PyYAML would silently keep the
last one: in a security configuration a duplicated ``members:`` or project slug is almost
certainly a mistake), or fails :func:`~havre.enclave.config.validation.parse_enclave_config`.

Standard library and PyYAML only.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from havre.enclave.config.cluster import cluster_doc
from havre.enclave.config.model import EnclaveConfig, EnclaveConfigError, IdentityConfig
from havre.enclave.config.problems import join_path
from havre.enclave.config.sizes import MIB, format_size
from havre.enclave.config.validation import parse_enclave_config

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
                    stack.append((value_node, join_path(path, key)))
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
                        f"{join_path(parent, key)}: duplicate key on line {line} "
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
    explicit, and a desktop project's ``desktop_limits`` and ``desktop_paste``), so the
    output also documents what the hub actually uses.  The top-level ``limits`` and
    ``desktop_limits`` sections are therefore not written.
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
            "access": proj.access,
        }
        if proj.desktop:
            projects[slug]["desktop_limits"] = {
                "cpu": float(proj.desktop_limits.cpu),
                "memory": format_size(proj.desktop_limits.memory_bytes),
                "pids": proj.desktop_limits.pids,
            }
            projects[slug]["desktop_paste"] = proj.desktop_paste
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
        "images": {
            "allowed": list(cfg.allowed_images),
            "default": cfg.default_image,
            "desktop": cfg.desktop_image,
        },
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
    if cfg.cluster is not None:
        doc["cluster"] = cluster_doc(cfg.cluster)
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
