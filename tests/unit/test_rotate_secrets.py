"""ansible/rotate-secrets.yml's list of secrets: Ansible's own argument check (the playbook's
``validate_argument_spec`` task, taken from the real file) accepts every secret ``havre up``
makes that the playbook offers, hub-metrics-token included, and refuses a name it doesn't know
before anything is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from havre.host.layout import SECRETS

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "ansible" / "rotate-secrets.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def _check_task() -> dict:
    (play, *_rest) = yaml.safe_load(PLAYBOOK.read_text())
    (task,) = [t for t in play["tasks"] if "ansible.builtin.validate_argument_spec" in t]
    return task


def _choices() -> list[str]:
    spec = _check_task()["ansible.builtin.validate_argument_spec"]["argument_spec"]
    return spec["havre_rotate_secrets"]["choices"]


def _validate(tmp_path: Path, secrets: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the playbook's own check task with ``havre_rotate_secrets=secrets`` on localhost."""
    play = [
        {
            "name": "rotate-secrets.yml's argument check",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [_check_task()],
        }
    ]
    playbook = tmp_path / "check.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            str(playbook),
            "-e",
            json.dumps({"havre_rotate_secrets": secrets}),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_every_choice_names_a_secret_havre_up_makes_and_the_defaults_are_choices():
    play = yaml.safe_load(PLAYBOOK.read_text())[0]
    # a choice naming no secret would remove nothing and rotate nothing, silently
    assert set(_choices()) <= set(SECRETS) | {"egress-cookie-secret"}
    assert set(play["vars"]["havre_rotate_secrets"]) <= set(_choices())
    assert "hub-metrics-token" in _choices()


def test_ansible_accepts_hub_metrics_token_and_refuses_an_unknown_secret(tmp_path):
    accepted = _validate(tmp_path, ["hub-metrics-token", "cookie-secret"])
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    # control: the same check refuses a name that isn't one of the choices
    refused = _validate(tmp_path, ["hub-metrics-token", "not-a-secret"])
    assert refused.returncode != 0
    assert "not-a-secret" in refused.stdout + refused.stderr
