"""The embedded demo enclave: three projects (one of them pixels only), eight users, synthetic
hospital-stay data.

``havre demo-init`` writes it once into a state folder; running it again keeps what exists
(config, data, passwords), so a second run is harmless. Users sign in on Havre's embedded
OpenID Connect provider; their groups there decide their projects and roles, as they would
in a site's Keycloak.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from havre.enclave.config import EnclaveConfig, load_enclave_config
from havre.host.synthetic_data import write_hospital_stays_csv
from havre.idp.users import seed_users

#: (slug, title, data seed)
DEMO_PROJECTS = (
    ("cardio", "Cardiovascular outcomes after hospital stays", 11),
    ("diabetes", "Diabetes care pathways", 23),
    ("renal", "Renal outcomes (pixels only)", 37),
)
#: the demo projects reached through a remote desktop only (``access: desktop``, issue #17)
DEMO_DESKTOP_PROJECTS = frozenset({"renal"})
#: the demo desktop projects whose researchers may paste text in (``desktop_paste:
#: inbound-text``, audited; the default is none): renal shows the paste box
DEMO_PASTE_PROJECTS = frozenset({"renal"})
#: user -> (groups at the identity provider, what the user is for). bob's group is in
#: Keycloak's full-path form, to show that both forms map to the project.
DEMO_USERS = {
    "alice": (["project-cardio"], "researcher in cardio"),
    "bob": (["/project-diabetes"], "researcher in diabetes"),
    "carol": (["project-cardio", "project-diabetes"], "researcher in cardio and diabetes"),
    "chloe": (
        ["project-cardio", "output-checkers"],
        "researcher in cardio and output checker (never of her own requests)",
    ),
    "olivia": (["output-checkers"], "output checker"),
    "oscar": (["output-checkers"], "output checker"),
    "dora": (["project-renal"], "researcher in renal (pixels only: a remote desktop)"),
    "adam": (["havre-admins"], "hub administrator (can't enter researchers' servers)"),
}
DEMO_ROWS = 5000


@dataclass(frozen=True)
class DemoUser:
    """A demo login and what it is for."""

    name: str
    password: str
    role: str


def demo_config_text(
    state_dir: Path,
    notebook_image: str,
    enclave_name: str = "havre",
    membership_check_seconds: int = 60,
) -> str:
    """The demo enclave's config file."""
    lines = [
        "# Havre demo enclave, written by `havre demo-init`. Synthetic data only.",
        "enclave:",
        f"  name: {enclave_name}",
        f"  state_dir: {json.dumps(str(state_dir))}",
        "images:",
        f'  allowed: ["{notebook_image}"]',
        f'  default: "{notebook_image}"',
        "limits:",
        "  cpu: 1.0",
        "  memory: 2G",
        "  pids: 512",
        "identity:",
        "  provider: embedded",
        "  checker_groups: [output-checkers]",
        "  admin_groups: [havre-admins]",
        "  server_access_groups: [havre-server-access]",
        f"  membership_check_seconds: {membership_check_seconds}",
        "projects:",
    ]
    for slug, title, _seed in DEMO_PROJECTS:
        lines += [f"  {slug}:", f'    title: "{title}"', f"    groups: [project-{slug}]"]
        if slug in DEMO_DESKTOP_PROJECTS:
            lines.append("    access: desktop")
        if slug in DEMO_PASTE_PROJECTS:
            lines.append("    desktop_paste: inbound-text")
    lines += ["review:", "  reviews_required: 2", ""]
    return "\n".join(lines)


def demo_roles() -> dict[str, str]:
    """What each demo user is for, by name."""
    return {name: role for name, (_groups, role) in DEMO_USERS.items()}


def idp_users_file(enclave: EnclaveConfig) -> Path:
    """Where the embedded identity provider keeps its users (password hashes, groups)."""
    return enclave.state_dir / "idp" / "users.json"


def init_demo(
    state_dir: Path,
    notebook_image: str,
    *,
    enclave_name: str | None = None,
    membership_check_seconds: int = 60,
) -> tuple[EnclaveConfig, list[DemoUser]]:
    """Write the demo config, data and users where missing; return config and logins."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    config_path = state_dir / "enclave.yaml"
    if not config_path.exists():
        text = demo_config_text(
            state_dir, notebook_image, enclave_name or "havre", membership_check_seconds
        )
        config_path.write_text(text)
    enclave = load_enclave_config(config_path)

    for slug, _title, seed in DEMO_PROJECTS:
        if slug not in enclave.projects:
            continue
        data_file = enclave.projects[slug].data_path / "hospital_stays.csv"
        if not data_file.exists():
            data_file.parent.mkdir(parents=True, exist_ok=True)
            write_hospital_stays_csv(data_file, DEMO_ROWS, seed)
            os.chmod(data_file, 0o644)

    return enclave, ensure_demo_users(enclave)


def ensure_demo_users(enclave: EnclaveConfig) -> list[DemoUser]:
    """Give every demo user a random password once, at the embedded provider; keep them."""
    secrets_dir = enclave.state_dir / "secrets"
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    plain_file = secrets_dir / "demo-passwords.txt"
    plain: dict[str, str] = {}
    if plain_file.exists():
        for line in plain_file.read_text().splitlines():
            name, _, password = line.partition(" ")
            if name and password:
                plain[name] = password
    for name in DEMO_USERS:
        plain.setdefault(name, secrets.token_urlsafe(12))
    users_file = idp_users_file(enclave)
    users_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    seed_users(
        users_file,
        {
            name: {
                "password": plain[name],
                "groups": groups,
                "email": f"{name}@demo.havre.invalid",
                "name": name.capitalize(),
            }
            for name, (groups, _role) in DEMO_USERS.items()
        },
    )
    fd = os.open(plain_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{name} {plain[name]}\n" for name in DEMO_USERS)
    return [DemoUser(name, plain[name], role) for name, (_g, role) in DEMO_USERS.items()]
