"""The enclave role's config template, rendered as Ansible renders it, read by Havre's parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from havre.enclave.config import EnclaveConfigError, parse_enclave_config

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


def test_a_projects_access_tier_and_desktop_settings_reach_the_enclave_config():
    projects = {
        "cardio": {"title": "Cardio", "members": ["alice"]},
        "renal": {
            "title": "Renal",
            "members": ["dora"],
            "access": "desktop",
            "desktop_limits": {"memory": "1536M"},
            "desktop_paste": "inbound-text",
        },
    }
    parsed = parse_enclave_config(render(havre_projects=projects), source="unit").projects
    assert (parsed["renal"].access, parsed["renal"].desktop_paste) == ("desktop", "inbound-text")
    assert parsed["renal"].desktop_limits.memory_bytes == 1536 * 1024**2
    # control: a project without them keeps the defaults
    assert (parsed["cardio"].access, parsed["cardio"].desktop_paste) == ("browser", "none")


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


# --- a cluster (docs/sysadmin/cluster.md) -------------------------------------------------

CLUSTER = {
    "groups": {"havre": ["mgr"], "havre_workers": ["w1", "w2"]},
    "havre_docker_url": "unix:///run/hvt-n1.sock",
    "havre_projects": {
        "cardio": {"title": "Cardio", "members": ["alice"]},
        "diabetes": {"title": "Diabetes", "placement": "site=hospital-b", "data_owner": "root"},
    },
}


def test_a_single_host_gets_no_cluster_section():
    assert "cluster" not in render()
    assert parse_enclave_config(render(), source="unit").cluster is None


def test_the_cluster_section_comes_from_the_inventory(monkeypatch):
    monkeypatch.delenv("HAVRE_INSECURE_TEST_CLUSTER", raising=False)
    config = render(**CLUSTER)
    assert config["cluster"] == {
        "engine": "swarm",
        "manager": "unix:///run/hvt-n1.sock",  # the manager's havre_docker_url
        "placement": {"diabetes": "site=hospital-b"},
    }
    # the role's own keys stay out of the enclave config's projects
    assert config["projects"]["diabetes"] == {"title": "Diabetes"}
    cluster = parse_enclave_config(config, source="unit").cluster
    assert cluster is not None and cluster.overlay_encrypted
    assert cluster.constraints("diabetes") == ["node.role==worker", "node.labels.site==hospital-b"]
    assert cluster.constraints("cardio") == [
        "node.role==worker",
        "node.labels.havre.data.cardio==true",
    ]
    # a manager reached some other way: Docker's default socket on the manager
    other = render(**{**CLUSTER, "havre_docker_url": "ssh://root@mgr"})
    assert other["cluster"]["manager"] == "unix:///var/run/docker.sock"


def test_the_test_clusters_unencrypted_overlay_needs_the_test_flag(monkeypatch):
    """The test variable renders the test-only key; the config refuses it without the flag."""
    config = render(**CLUSTER, havre_test_cluster_insecure_unencrypted_overlay=True)
    assert config["cluster"]["insecure_test_unencrypted_overlay"] is True
    monkeypatch.delenv("HAVRE_INSECURE_TEST_CLUSTER", raising=False)
    with pytest.raises(EnclaveConfigError, match="HAVRE_INSECURE_TEST_CLUSTER=1"):
        parse_enclave_config(config, source="unit")
    # control: the test cluster's run, with the flag
    monkeypatch.setenv("HAVRE_INSECURE_TEST_CLUSTER", "1")
    cluster = parse_enclave_config(config, source="unit").cluster
    assert cluster is not None and not cluster.overlay_encrypted


def test_no_variable_turns_overlay_encryption_off():
    """Only the test variable touches encryption: no role option, no template line, no default."""
    template = (ROLE / "templates" / "enclave.yaml.j2").read_text()
    assert "overlay_encrypted" not in template
    options = set()
    for spec in (REPO / "ansible" / "roles").glob("*/meta/argument_specs.yml"):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            options |= set(entry.get("options", {}))
    defaults = set(yaml.safe_load((REPO / "ansible" / "group_vars" / "all.yml").read_text()))
    # (havre_backup_unencrypted is the backup archive's, not the network's)
    touching = {n for n in options | defaults if "overlay" in n or "swarm" in n and "encrypt" in n}
    assert touching == {"havre_test_cluster_insecure_unencrypted_overlay"}
    # a made-up variable does nothing: the rendered config is the same with and without it
    assert render(**CLUSTER, havre_cluster_overlay_encrypted=False) == render(**CLUSTER)
