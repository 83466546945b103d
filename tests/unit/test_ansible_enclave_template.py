"""The enclave role's config template, rendered as Ansible renders it, read by Havre's parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from havre.enclave.config import parse_enclave_config

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "havre_enclave"
templating = pytest.importorskip("ansible.template", reason="ansible-core is a dev dependency")


def render(**overrides: object) -> dict:
    from ansible.parsing.dataloader import DataLoader

    variables = yaml.safe_load((REPO / "ansible" / "group_vars" / "all.yml").read_text())
    variables.update(
        {
            "ansible_managed": "Ansible managed",
            "havre_enclave_name": "unit",
            "havre_state_dir": "/srv/unit",
            "havre_config_dir": "/etc/havre/unit",
            "havre_notebook_images": ["havre/notebook:0.1.0"],
            "havre_projects": {"cardio": {"title": "Cardio", "members": ["alice"]}},
            "havre_output_checkers": ["olivia"],
        }
    )
    variables.update(overrides)
    templar = templating.Templar(loader=DataLoader(), variables=variables)
    text = templar.template((ROLE / "templates" / "enclave.yaml.j2").read_text())
    return yaml.safe_load(text)


def test_shared_filesystems_by_default():
    config = render()
    assert "project_filesystems" not in config["enclave"]
    assert parse_enclave_config(config, source="unit").project_filesystems == "shared"


def test_loop_filesystems_reach_the_enclave_config():
    config = render(havre_project_filesystems="loop", havre_project_filesystem_size="1G")
    parsed = parse_enclave_config(config, source="unit")
    assert parsed.project_filesystems == "loop"
    assert parsed.project_filesystem_size == 1024**3


def test_the_role_mounts_them_at_boot_only_for_loop():
    tasks = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    include = [
        t for t in tasks if "project-filesystems.yml" in str(t.get("ansible.builtin.include_tasks"))
    ]
    assert include and include[0]["when"] == "havre_project_filesystems == 'loop'"
    assert (ROLE / "tasks" / "project-filesystems.yml").is_file()


def test_the_log_format_reaches_the_enclave_config():
    assert "logging" not in render()  # json, the config's own default
    assert parse_enclave_config(render(), source="unit").log_format == "json"
    text = parse_enclave_config(render(havre_log_format="text"), source="unit")
    assert text.log_format == "text"


def test_metrics_are_off_unless_one_address_is_named():
    assert "monitoring" not in render()
    config = render(havre_metrics_scrape_from="10.0.0.5", havre_metrics_publish="10.0.0.1:9190")
    assert config["monitoring"] == {"scrape_from": ["10.0.0.5/32"], "publish": "10.0.0.1:9190"}
    parsed = parse_enclave_config(config, source="unit").monitoring
    assert parsed.scrape_from == ("10.0.0.5/32",) and parsed.publish == "10.0.0.1:9190"
    assert render(havre_metrics_scrape_from="10.0.0.5")["monitoring"] == {
        "scrape_from": ["10.0.0.5/32"]
    }
