"""Project and member changes read live (havre/enclave/live.py): what is re-read, and what
still restarts a container."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from havre.enclave.config import EnclaveConfigError, load_enclave_config
from havre.enclave.live import (
    LiveConfig,
    LiveEnclave,
    live_config_path,
    publish_config,
    restart_digest,
)


def _config(state: Path, **change: object) -> dict:
    config = {
        "enclave": {"name": "unit", "state_dir": str(state)},
        "images": {"allowed": ["havre/notebook:0.1.0"], "default": "havre/notebook:0.1.0"},
        "identity": {"provider": "embedded"},
        "projects": {
            "cardio": {"title": "Cardio", "members": ["alice"], "groups": ["project-cardio"]}
        },
        "output_checkers": ["olivia"],
    }
    config.update(change)
    return config


def _replace(path: Path, config: dict) -> None:
    """As Ansible's template module does: write beside, rename over."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(yaml.safe_dump(config))
    os.replace(partial, path)


def test_a_replaced_file_is_read_again_and_an_unchanged_one_is_not(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path / "state")))
    live = LiveConfig(path)
    first = live.current()
    assert first.projects["cardio"].members == {"alice"}
    assert live.current() is first and live.reloads == 0  # control: nothing changed, no read

    projects = {"cardio": {"title": "Cardio 2", "members": ["alice", "dave"]}}
    _replace(path, _config(tmp_path / "state", projects=projects))
    now = LiveEnclave(live)
    assert now.projects["cardio"].members == {"alice", "dave"}
    assert now.projects["cardio"].title == "Cardio 2"
    assert live.reloads == 1


def test_an_invalid_file_fails_closed_and_is_read_again_when_fixed(tmp_path):
    path = tmp_path / "enclave.yaml"
    good = _config(tmp_path / "state")
    path.write_text(yaml.safe_dump(good))
    live = LiveConfig(path)
    live.current()
    _replace(path, {**good, "projects": {"Bad Slug": {"title": "x"}}})
    with pytest.raises(EnclaveConfigError):
        live.current()  # never the last good config: a removal must not be missed
    _replace(path, good)
    assert live.current().projects["cardio"].members == {"alice"}


def _digests(tmp_path: Path, config: dict) -> dict[str, str]:
    path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(config))
    enclave = load_enclave_config(path)
    return {kind: restart_digest(enclave, projects=kind) for kind in ("none", "paths", "all")}


def test_restart_digests_leave_out_only_what_is_read_live(tmp_path):
    state = tmp_path / "state"
    base = _digests(tmp_path, _config(state))
    cardio = _config(state)["projects"]["cardio"]
    retitled = _digests(
        tmp_path,
        _config(
            state,
            projects={"cardio": {**cardio, "title": "New", "members": ["bob"], "groups": []}},
            output_checkers=["oscar"],
        ),
    )
    assert retitled["none"] == base["none"] and retitled["paths"] == base["paths"]
    assert retitled["all"] != base["all"]  # control: the change is a change
    added = _digests(
        tmp_path,
        _config(state, projects={**_config(state)["projects"], "onco": {"title": "Onco"}}),
    )
    assert added["none"] == base["none"]  # hub, egress: a new project is read live
    assert added["paths"] != base["paths"]  # the runner mounts each project's data
    other = _digests(tmp_path, _config(state, review={"reviews_required": 1}))
    assert other["none"] != base["none"] and other["paths"] != base["paths"]


def test_publish_replaces_the_copy_whole_and_only_when_it_differs(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path / "state")))
    enclave = load_enclave_config(path)
    changes: list[str] = []
    folder = publish_config(enclave, changes)
    target = live_config_path(enclave)
    assert folder == target.parent and target.read_bytes() == path.read_bytes()
    assert len(changes) == 1 and oct(target.stat().st_mode & 0o777) == "0o644"
    inode = target.stat().st_ino
    publish_config(enclave, changes)
    assert len(changes) == 1 and target.stat().st_ino == inode  # same bytes: untouched
    _replace(path, _config(tmp_path / "state", output_checkers=["oscar"]))
    publish_config(load_enclave_config(path), changes)
    assert len(changes) == 2 and target.stat().st_ino != inode  # renamed over, never rewritten
    assert sorted(p.name for p in folder.iterdir()) == ["enclave.yaml"]
