"""The embedded demo enclave: two projects, five users, synthetic hospital-stay data.

``havre demo-init`` writes it once into a state folder; running it again keeps what exists
(config, data, passwords), so a second run is harmless.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from spawner.demo_auth import hash_password, read_password_file, write_password_file
from spawner.enclave import EnclaveConfig, load_enclave_config
from spawner.synthetic_data import write_hospital_stays_csv

#: (slug, title, members, data seed)
DEMO_PROJECTS = (
    ("cardio", "Cardiovascular outcomes after hospital stays", ("alice", "carol"), 11),
    ("diabetes", "Diabetes care pathways", ("bob", "carol"), 23),
)
DEMO_CHECKERS = ("olivia", "oscar")
DEMO_ROWS = 5000


@dataclass(frozen=True)
class DemoUser:
    """A demo login and what it is for."""

    name: str
    password: str
    role: str


def demo_config_text(state_dir: Path, notebook_image: str) -> str:
    """The demo enclave's config file."""
    lines = [
        "# Havre demo enclave, written by `havre demo-init`. Synthetic data only.",
        "enclave:",
        "  name: havre",
        f"  state_dir: {json.dumps(str(state_dir))}",
        "images:",
        f'  allowed: ["{notebook_image}"]',
        f'  default: "{notebook_image}"',
        "limits:",
        "  cpu: 1.0",
        "  memory: 2G",
        "  pids: 512",
        "projects:",
    ]
    for slug, title, members, _seed in DEMO_PROJECTS:
        lines += [
            f"  {slug}:",
            f'    title: "{title}"',
            f"    members: [{', '.join(members)}]",
        ]
    lines += [
        f"output_checkers: [{', '.join(DEMO_CHECKERS)}]",
        "review:",
        "  reviews_required: 2",
        "",
    ]
    return "\n".join(lines)


def demo_roles() -> dict[str, str]:
    roles: dict[str, list[str]] = {}
    for slug, _title, members, _seed in DEMO_PROJECTS:
        for member in members:
            roles.setdefault(member, []).append(f"researcher in {slug}")
    for checker in DEMO_CHECKERS:
        roles.setdefault(checker, []).append("output checker")
    return {name: ", ".join(parts) for name, parts in roles.items()}


def init_demo(
    state_dir: Path, notebook_image: str, *, enclave_name: str | None = None
) -> tuple[EnclaveConfig, list[DemoUser]]:
    """Write the demo config, data and passwords where missing; return config and logins."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    config_path = state_dir / "enclave.yaml"
    if not config_path.exists():
        text = demo_config_text(state_dir, notebook_image)
        if enclave_name:
            text = text.replace("  name: havre\n", f"  name: {enclave_name}\n", 1)
        config_path.write_text(text)
    enclave = load_enclave_config(config_path)

    for slug, _title, _members, seed in DEMO_PROJECTS:
        if slug not in enclave.projects:
            continue
        data_file = enclave.projects[slug].data_path / "hospital_stays.csv"
        if not data_file.exists():
            data_file.parent.mkdir(parents=True, exist_ok=True)
            write_hospital_stays_csv(data_file, DEMO_ROWS, seed)
            os.chmod(data_file, 0o644)

    return enclave, ensure_demo_passwords(enclave)


def ensure_demo_passwords(enclave: EnclaveConfig) -> list[DemoUser]:
    """Give every demo user a random password once; keep existing ones."""
    secrets_dir = enclave.state_dir / "secrets"
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    hashes_file = secrets_dir / "demo-passwords.json"
    plain_file = secrets_dir / "demo-passwords.txt"
    hashes = read_password_file(hashes_file) if hashes_file.exists() else {}
    plain: dict[str, str] = {}
    if plain_file.exists():
        for line in plain_file.read_text().splitlines():
            name, _, password = line.partition(" ")
            if name and password:
                plain[name] = password
    users = []
    for name, role in demo_roles().items():
        if name not in hashes or name not in plain:
            plain[name] = secrets.token_urlsafe(12)
            hashes[name] = hash_password(plain[name])
        users.append(DemoUser(name, plain[name], role))
    write_password_file(hashes_file, hashes)
    fd = os.open(plain_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{u.name} {u.password}\n" for u in users)
    return users
