"""site.yml on a cluster, its Docker-free part run for real by ansible-playbook on this machine.

The manager's checks (site.yml's pre-task: the shared file system named, no unencrypted
overlay outside a test run), the manager's reading of the projects' groups (havre_enclave's
tasks, from an identity table Havre's own code writes) and site.yml's second play on the
workers (the shared file system seen, the data folders of the projects each worker is labelled
for) are taken from the real files and run against inventory hosts that are this machine
(local connection). A worker that does not share the file system is this machine with a
private mount namespace where a tmpfs hides the shared folder.

What needs Docker (havre up, the images loaded into the workers' engines, a server on a
worker reading /data) is tests/cluster (tests/cluster/deploy.py deploys it there).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from havre.enclave.identities import IdentityTable, save_table, table_path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to other uids)")
EXAMPLE = ANSIBLE / "inventories" / "cluster-example" / "hosts.yml"


def _task(tasks: list[dict], name: str) -> dict:
    (found,) = [t for t in tasks if t.get("name") == name]
    return found


FLAG_TASK = (
    "Pass the test cluster's flag on to havre (only with the test variable AND a test run's "
    "environment)"
)


def _playbook() -> list[dict]:
    """site.yml's cluster check, havre_enclave's reading of the groups, site.yml's worker play."""
    site = yaml.safe_load((ANSIBLE / "site.yml").read_text())
    manager, workers = site
    check = _task(
        manager["pre_tasks"],
        "Check a cluster's settings before anything changes (the shared file system named)",
    )
    enclave = yaml.safe_load((ANSIBLE / "roles/havre_enclave/tasks/main.yml").read_text())
    groups = [
        _task(enclave, "Read the projects' groups (cluster)"),
        _task(enclave, "Note the projects' groups for the workers (cluster)"),
    ]
    flag = _task(enclave, FLAG_TASK)
    show = {
        "name": "what the role adds to havre's environment",
        "ansible.builtin.debug": {"msg": "havre-env={{ havre_enclave_environment | to_json }}"},
    }
    first = {"name": "the manager", "hosts": "havre", "gather_facts": False}
    return [{**first, "tasks": [check, flag, show, *groups]}, workers]


class Site:
    """A playbook folder (the real roles and group_vars), an inventory, and a run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shared = root / "shared"
        self.state = self.shared / "state"
        self.elsewhere = root / "diabetes-data"
        self.book = root / "book"
        self.book.mkdir()
        for name in ("roles", "group_vars"):
            (self.book / name).symlink_to(ANSIBLE / name)
        (self.book / "site-cluster.yml").write_text(yaml.safe_dump(_playbook(), sort_keys=False))
        self.state.mkdir(parents=True)
        self.table = IdentityTable()
        self.gids = {slug: self.table.project_gid(slug) for slug in ("cardio", "diabetes", "onco")}
        save_table(self.table, table_path(self.state))
        self.manager_vars: dict[str, object] = {
            "havre_enclave_name": "ut",
            "havre_state_dir": str(self.state),
            "havre_cluster_shared_state": str(self.shared),
            "havre_projects": {
                "cardio": {"title": "Cardio"},
                "diabetes": {
                    "title": "Diabetes",
                    "data_path": str(self.elsewhere),
                    "placement": "hospital=b",
                },
                "onco": {"title": "Onco"},  # no worker carries its label
            },
        }
        self.labels = {"w1": {"havre.data.cardio": "true"}, "w2": {"hospital": "b"}}
        self.wrappers: dict[str, Path] = {}

    def data(self, slug: str) -> Path:
        return self.elsewhere if slug == "diabetes" else self.state / "projects" / slug / "data"

    def hide_shared_from(self, worker: str) -> None:
        """Run ``worker``'s commands where a tmpfs covers the shared folder (not shared)."""
        wrapper = self.root / f"{worker}-sh"
        wrapper.write_text(
            "#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c "
            f'\'mount -t tmpfs hidden {self.shared} && exec /bin/sh "$@"\' sh "$@"\n'
        )
        wrapper.chmod(0o755)
        self.wrappers[worker] = wrapper

    def run(self, env: dict[str, str] | None = None, **manager: object) -> tuple[int, str]:
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}

        def worker(name: str) -> dict:
            found = {**local, "havre_swarm_node_labels": self.labels[name]}
            if name in self.wrappers:
                found["ansible_shell_executable"] = str(self.wrappers[name])
            return found

        inventory = {
            "havre": {"hosts": {"mgr": {**local, **self.manager_vars, **manager}}},
            "havre_workers": {"hosts": {name: worker(name) for name in self.labels}},
        }
        hosts = self.root / "hosts.yml"
        hosts.write_text(yaml.safe_dump(inventory))
        done = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", str(hosts), "site-cluster.yml"],
            cwd=self.book,
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **{k: v for k, v in os.environ.items() if k != "HAVRE_INSECURE_TEST_CLUSTER"},
                "ANSIBLE_LOCAL_TEMP": str(self.root / "tmp"),
                "ANSIBLE_REMOTE_TEMP": str(self.root / "tmp"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                **(env or {}),
            },
        )
        return done.returncode, done.stdout + done.stderr


def _owner_mode(path: Path) -> tuple[int, int, str]:
    st = path.stat()
    return st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode))


def _changed(output: str) -> int:
    return sum(
        int(line.split("changed=")[1].split()[0])
        for line in output.splitlines()
        if " : ok=" in line
    )


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@needs_root
def test_each_worker_gets_the_data_folders_of_the_projects_it_is_labelled_for(site):
    cardio = site.data("cardio")
    (cardio / "visits").mkdir(parents=True)
    (cardio / "visits" / "2024.csv").write_text("id,days\n1,3\n")
    (cardio / "visits" / "2024.csv").chmod(0o666)
    code, output = site.run()
    assert code == 0, output[-4000:]
    gids = site.gids
    # w1 carries havre.data.cardio=true (the default label): cardio's folder, as havre up makes it
    assert _owner_mode(cardio) == (0, gids["cardio"], "0o750")
    assert _owner_mode(cardio / "visits") == (0, gids["cardio"], "0o750")
    assert _owner_mode(cardio / "visits" / "2024.csv") == (0, gids["cardio"], "0o640")
    # w2 carries hospital=b, diabetes's placement: its data_path, same path as the manager's
    assert _owner_mode(site.data("diabetes")) == (0, gids["diabetes"], "0o750")
    # control: no worker carries onco's label, so no worker makes its folder
    assert not site.data("onco").exists()
    # a second run changes nothing
    code, output = site.run()
    assert code == 0 and _changed(output) == 0, output[-4000:]


@needs_root
def test_a_cluster_without_the_shared_file_system_named_is_refused(site):
    code, output = site.run(havre_cluster_shared_state="")
    assert code != 0
    assert "set havre_cluster_shared_state to the mount path" in output
    assert not site.data("cardio").exists()  # refused before any folder was made
    # a state folder outside the named file system: refused too
    code, output = site.run(havre_cluster_shared_state=str(site.root / "elsewhere"))
    assert code != 0 and "put havre_state_dir below it" in output
    # control: named, with the state folder below it
    code, output = site.run()
    assert code == 0, output[-4000:]


@needs_root
def test_a_worker_that_does_not_share_the_file_system_is_refused(site):
    site.hide_shared_from("w2")
    code, output = site.run()
    assert code != 0
    assert "w2 does not see the file the manager (mgr) just wrote" in output
    assert "w1 does not see" not in output  # control: w1 shares it, its folder is made
    assert _owner_mode(site.data("cardio")) == (0, site.gids["cardio"], "0o750")
    assert not site.data("diabetes").exists()


@needs_root
def test_the_unencrypted_test_overlay_needs_a_test_runs_environment(site):
    test_only = {"havre_test_cluster_insecure_unencrypted_overlay": True}
    code, output = site.run(**test_only)
    assert code != 0
    assert "havre_test_cluster_insecure_unencrypted_overlay is for the test cluster" in output
    assert "havre-env=" not in output  # refused before anything reached havre
    # control: the test cluster's run sets the flag in ansible-playbook's environment, and only
    # then does the role pass it on to havre (check-config and up, over any connection)
    code, output = site.run(env={"HAVRE_INSECURE_TEST_CLUSTER": "1"}, **test_only)
    assert code == 0, output[-4000:]
    assert '"msg": "havre-env={\\"HAVRE_INSECURE_TEST_CLUSTER\\": \\"1\\"}"' in output, output
    # the environment alone, without the test variable: the role passes nothing on
    code, output = site.run(env={"HAVRE_INSECURE_TEST_CLUSTER": "1"})
    assert code == 0 and '"msg": "havre-env={}"' in output, output[-4000:]


def test_havre_gets_the_roles_environment():
    """check-config (the template's validate) and havre up run with what the role passes on."""
    tasks = yaml.safe_load((ANSIBLE / "roles/havre_enclave/tasks/main.yml").read_text())
    using = [t["name"] for t in tasks if t.get("environment") == "{{ havre_enclave_environment }}"]
    assert using == [
        "Write the enclave config (checked with havre check-config before it is put in place)",
        "Start the enclave (havre up; reports what it created, started or replaced)",
    ]


def _example_hostvars() -> dict[str, dict]:
    listed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.parent / "ansible-inventory"), "-i", str(EXAMPLE), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ANSIBLE,
        timeout=120,
    )
    return json.loads(listed.stdout)["_meta"]["hostvars"]


def _spec(role: str, entry: str = "main") -> dict:
    path = ANSIBLE / "roles" / role / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text())["argument_specs"][entry]["options"]


def _problems(spec: dict, variables: dict) -> list[str]:
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    # what the inventory sets for this role (templated values are checked when Ansible runs)
    given = {k: v for k, v in variables.items() if k in spec and "{{" not in json.dumps(v)}
    loose = {k: {**v, "required": False} for k, v in spec.items()}
    return ArgumentSpecValidator(loose).validate(given).error_messages


def test_the_cluster_example_inventory_meets_the_roles_argument_specs():
    hostvars = _example_hostvars()
    manager = hostvars["tre-mgr1.example.org"]
    assert manager["havre_cluster_shared_state"] == "/srv/havre-shared"
    assert manager["havre_state_dir"].startswith("/srv/havre-shared/")
    assert _problems(_spec("havre_enclave"), manager) == []
    assert _problems(_spec("havre_swarm"), manager) == []
    workers = [name for name in hostvars if "wrk" in name]
    assert len(workers) == 2
    for name in workers:
        assert _problems(_spec("havre_enclave", "worker"), hostvars[name]) == []
        assert _problems(_spec("havre_swarm"), hostvars[name]) == []
    # control: the same check refuses a wrong type
    assert _problems(_spec("havre_enclave", "worker"), {"havre_swarm_node_labels": ["x"]})


def test_the_cluster_playbooks_pass_ansibles_syntax_check_with_the_cluster_inventory():
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--syntax-check", "-i", str(EXAMPLE), "cluster.yml", "site.yml"],
        capture_output=True,
        text=True,
        cwd=ANSIBLE,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _hosts_of_the_worker_play(inventory: Path) -> list[str]:
    listed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--list-hosts", "-i", str(inventory), "site.yml"],
        capture_output=True,
        text=True,
        cwd=ANSIBLE,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "Could not match supplied host pattern" not in listed.stderr
    worker_play = listed.stdout.split("play #2")[1]
    return sorted(line.strip() for line in worker_play.splitlines()[3:] if line.strip())


def test_the_worker_play_runs_on_the_workers_and_on_one_host_on_none():
    assert _hosts_of_the_worker_play(EXAMPLE) == ["tre-wrk1.example.org", "tre-wrk2.example.org"]
    single = ANSIBLE / "inventories" / "example" / "hosts.yml"
    assert _hosts_of_the_worker_play(single) == []
