"""Trusted re-execution (egress/reexecution/engine.py) on the real Docker engine and notebook image.

Every test runs real notebooks (made here with nbformat) through ``run_notebook`` and checks,
after each test, that no re-execution container and no scratch folder is left behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import threading
import time
from dataclasses import replace

import docker
import docker.errors
import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from egress.audit.signing import generate_key, load_private_key, sign_record, verify_record
from egress.reexecution.engine import run_notebook
from egress.reexecution.jobs import output_sdc_metadata
from egress.reexecution.model import (
    RUN_LABEL,
    CollectionLimits,
    ReexecutionRequest,
    compare_outputs,
    trusted_record,
)
from egress.reexecution.scratch import collect_outputs
from egress.reexecution.service import _param_problem, recompute_sdc, shown_verdict
from havre.enclave.config import DEFAULT_IMAGE, GIB, Limits, Project
from havre.sdc import SDCParams
from tests.integration.canaries import canary_on_a_bridge as bridge_canary
from tests.integration.canaries import new_token
from tests.integration.test_isolation import in_control

pytestmark = pytest.mark.docker

#: The notebook image (``images/build.sh`` builds it from this checkout); another tag can be
#: given to test a locally built image.
IMAGE = os.environ.get("HAVRE_REEXEC_TEST_IMAGE", DEFAULT_IMAGE)
SLUG = "rxtest"
SETTLE = 1.0  # seconds a canary is given to see late connections
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in IPython tracebacks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client():
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"needs a running Docker engine (scripts/run-tests.sh starts one): {err}")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"needs image {IMAGE}: build it with `bash images/build.sh`")
    yield client
    client.close()


def leftover_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": [RUN_LABEL, f"havre.project={SLUG}"]})


@pytest.fixture
def data_dir(tmp_path):
    """The project's data: a small cohort CSV. The folder is world-writable on the host, so
    the only thing that stops a write from the notebook is the read-only mount."""
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(20240501)
    rows = ["region,sex,value"]
    for _ in range(200):
        region = rng.choice(["north", "south", "east", "west"])
        rows.append(f"{region},{rng.choice(['F', 'M'])},{rng.randint(0, 6)}")
    (data / "cohort.csv").write_text("\n".join(rows) + "\n")
    (data / "cohort.csv").chmod(0o644)
    data.chmod(0o777)
    return data


@pytest.fixture
def scratch_root(tmp_path, client):
    root = tmp_path / "scratch"
    yield root
    assert leftover_containers(client) == [], "a re-execution container was left behind"
    assert not root.exists() or list(root.iterdir()) == [], "a scratch folder was left behind"


@pytest.fixture
def project(data_dir) -> Project:
    return Project(
        slug=SLUG,
        title="Re-execution test",
        members=frozenset({"alice"}),
        data_path=data_dir,
        image=IMAGE,
        limits=Limits(cpu=1.0, memory_bytes=1 * GIB, pids=256),
    )


def notebook(*sources: str, parameters: str | None = None) -> bytes:
    cells = [new_markdown_cell("Made by test_reexecution.")]
    if parameters is not None:
        cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells += [new_code_cell(source) for source in sources]
    nb = new_notebook(
        cells=cells,
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    return nbformat.writes(nb).encode()


def run(client, scratch_root, project, nb: bytes, parameters=None, **kw):
    request = ReexecutionRequest(
        notebook=nb,
        parameters=parameters or {},
        project=project,
        image=kw.pop("image", IMAGE),
        timeout_seconds=kw.pop("timeout_seconds", 60),
        extra_files=kw.pop("extra_files", {}),
        sdc_params=kw.pop("sdc_params", None),
    )
    return run_notebook(
        client,
        request,
        workdir_root=scratch_root,
        allowed_images=kw.pop("allowed_images", (IMAGE,)),
        **kw,
    )


# ------------------------------------------------------------------------------- outputs

#: The analysis, run both in the trusted container and in this test process.
CROSSTAB = """
import pandas as pd
df = pd.read_csv(f"{DATA}/cohort.csv")
table = pd.crosstab(df["region"], df["sex"])
table.to_csv(f"{OUT}/table.csv")
"""


def test_rerun_reproduces_a_local_run_and_compare_catches_tampering(
    client, scratch_root, project, data_dir, tmp_path
):
    results_json = '{"version": "havre-safe/0", "results": {"output_0": {"status": "pass"}}}'
    nb = notebook(
        "import os\nDATA = '/data'\nOUT = os.environ['HAVRE_OUTPUTS_DIR']",
        CROSSTAB,
        # what the safe-analysis library does: a session folder with results.json
        f"os.makedirs(f'{{OUT}}/session-1')\n"
        f"open(f'{{OUT}}/session-1/results.json', 'w').write({results_json!r})",
    )
    result = run(client, scratch_root, project, nb)
    assert result.status == "completed", result.reason + result.log
    assert result.exit_code == 0 and result.image_id.startswith("sha256:")

    # the same code, run here
    local_out = tmp_path / "local-out"
    local_out.mkdir()
    exec(CROSSTAB, {"DATA": str(data_dir), "OUT": str(local_out)})
    expected = (local_out / "table.csv").read_bytes()
    assert result.outputs["table.csv"] == expected
    assert pd.read_csv(io.BytesIO(expected)).shape == (4, 3)  # 4 regions x (region, F, M)
    assert result.outputs["session-1/results.json"] == results_json.encode()

    honest = {"table.csv": sha(expected), "session-1/results.json": sha(results_json.encode())}
    assert {c.path: c.status for c in compare_outputs(honest, result.outputs)} == {
        "table.csv": "identical",
        "session-1/results.json": "identical",
    }
    lines = expected.decode().splitlines()
    cells = lines[2].split(",")
    cells[1] = str(int(cells[1]) + 1)  # one cell of the table changed
    tampered = "\n".join(lines[:2] + [",".join(cells)] + lines[3:]).encode() + b"\n"
    submitted = {"table.csv": sha(tampered), "extra.csv": sha(b"not produced by the run")}
    comparison = {c.path: c for c in compare_outputs(submitted, result.outputs)}
    assert comparison["table.csv"].status == "differs"
    assert comparison["table.csv"].trusted_sha256 == sha(expected)
    assert comparison["extra.csv"].status == "only-submitted"
    assert comparison["session-1/results.json"].status == "only-trusted"

    # the record the service signs (one line: sign_record) and anyone can verify
    record = trusted_record(result, {"request_id": "req-1", "project": SLUG, "by": "olivia"})
    assert record["status"] == "completed" and record["network"] == "none"
    assert record["notebook"]["sha256"] == sha(nb)
    assert {o["path"]: o["sha256"] for o in record["outputs"]} == honest
    key_path = tmp_path / "signing.key"
    generate_key(key_path)
    signed = sign_record(record, load_private_key(key_path))
    public = load_private_key(key_path).public_key()
    assert verify_record(signed, public)
    signed["record"]["outputs"][0]["sha256"] = "0" * 64
    assert not verify_record(signed, public)


#: A researcher's analysis that relaxes the threshold to 1 in its own process; region x value
#: has 28 cells of 2 to 14 records (several under 10).
RELAXED = [
    "import json, os\nimport pandas as pd\nimport havre.safe as safe",
    "df = pd.read_csv(os.environ.get('HAVRE_DATA_DIR', '/data') + '/cohort.csv')",
    "s = safe.Session(params={'threshold': 1}, name='relaxed', show=False)\n"
    "t = s.crosstab(df['region'], df['value'])",
    "print('in force:', json.dumps(s.params.as_dict()))",
]


def test_a_notebook_that_relaxes_the_threshold_is_rerun_with_the_project_parameters(
    client, scratch_root, project, data_dir, tmp_path, monkeypatch
):
    # the researcher's own run (not trusted): her relaxed parameters, a pass
    monkeypatch.delenv("HAVRE_TRUSTED_REEXECUTION", raising=False)
    monkeypatch.delenv("HAVRE_SDC_PARAMS", raising=False)
    monkeypatch.setenv("HAVRE_OUTPUTS_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("HAVRE_DATA_DIR", str(data_dir))
    namespace: dict = {}
    for source in RELAXED[:-1]:
        exec(source, namespace)
    mine = {
        str(p.relative_to(tmp_path / "mine")): p.read_bytes()
        for p in (tmp_path / "mine").rglob("*")
        if p.is_file()
    }
    my_meta, problems = output_sdc_metadata(mine)
    assert problems == []
    assert my_meta["relaxed/output_0.csv"]["status"] == "pass"
    project_params = SDCParams()
    relaxed, sentence = _param_problem(my_meta["relaxed/output_0.csv"]["params"], project_params)
    assert relaxed == ["threshold"] and "threshold 1 (project: 10)" in sentence

    # the trusted run: the project's parameters are forced; the params file can't be rewritten
    nb = notebook(
        *RELAXED,
        "import os\n"
        "assert os.environ['HAVRE_TRUSTED_REEXECUTION'] == '1'\n"
        "try:\n"
        "    open(os.environ['HAVRE_SDC_PARAMS'], 'w').write('{\"threshold\": 1}')\n"
        "    print('params file: written')\n"
        "except OSError as err:\n"
        "    print('params file: refused', err.errno)",
    )
    result = run(client, scratch_root, project, nb, sdc_params=project_params.as_dict())
    assert result.status == "completed", result.reason + result.log
    assert result.sdc_params == project_params.as_dict()
    executed = nbformat.reads(result.executed_notebook.decode(), as_version=4)
    text = ANSI.sub("", json.dumps([c.get("outputs") for c in executed.cells]))
    assert '\\"threshold\\": 10' in text, text[:3000]  # the session ran with 10, not 1
    assert "forced; threshold 1 -> 10" in text  # and the notebook was told
    assert "params file: refused 30" in text  # EROFS: mounted read-only
    run_meta, problems = output_sdc_metadata(result.outputs)
    assert problems == []
    trusted = run_meta["relaxed/output_0.csv"]
    assert trusted["status"] == "fail" and trusted["params"]["threshold"] == 10
    assert _param_problem(trusted["params"], project_params) == ([], "")
    # the service's own check of the run's table agrees; the verdict shown is fail
    service = recompute_sdc(result.outputs, run_meta, project_params)
    assert service["relaxed/output_0.csv"]["status"] == "fail"
    assert shown_verdict(trusted, service["relaxed/output_0.csv"], [])["status"] == "fail"
    # the same table bytes as hers (the forced threshold only changes the verdict)
    assert result.outputs["relaxed/output_0.csv"] == mine["relaxed/output_0.csv"]
    record = trusted_record(result, {"request_id": "req-1"}, service)
    assert record["sdc_params"]["threshold"] == 10
    assert record["service_sdc"]["relaxed/output_0.csv"]["status"] == "fail"


def test_parameters_change_the_output_and_are_passed_verbatim(client, scratch_root, project):
    nb = notebook(
        "import os, pandas as pd\n"
        "from helpers.scale import FACTOR\n"  # an extra file sent with the notebook
        "df = pd.read_csv('/data/cohort.csv')\n"
        "out = os.environ['HAVRE_OUTPUTS_DIR']\n"
        "n = int((df['value'] > threshold).sum()) * FACTOR\n"
        "open(f'{out}/count.txt', 'w').write(str(n))\n"
        "open(f'{out}/label.txt', 'w').write(label)",
        parameters="threshold = 1\nlabel = 'default'",
    )
    extra = {"helpers/scale.py": b"FACTOR = 1\n"}
    default = run(client, scratch_root, project, nb, extra_files=extra)
    tricky = "a \"quote\", a 'quote', a \\ backslash\nand a new line; import os #"
    changed = run(
        client, scratch_root, project, nb, {"threshold": 3, "label": tricky}, extra_files=extra
    )
    assert default.status == changed.status == "completed", default.log + changed.log

    df = pd.read_csv(project.data_path / "cohort.csv")
    assert default.outputs["count.txt"] == str(int((df["value"] > 1).sum())).encode()
    assert changed.outputs["count.txt"] == str(int((df["value"] > 3).sum())).encode()
    assert default.outputs["count.txt"] != changed.outputs["count.txt"]
    assert changed.outputs["label.txt"].decode() == tricky
    assert changed.parameters == {"label": tricky, "threshold": 3}


def test_bad_parameters_and_file_names_are_refused_before_anything_runs(
    client, scratch_root, project
):
    nb = notebook("x = 1")
    for bad in ({"x = 1; import os": 1}, {"class": 1}, {"__builtins__": 1}, {"f": object()}):
        result = run(client, scratch_root, project, nb, bad)
        assert result.status == "refused" and result.container_id is None, bad
    for name in ("outputs/planted.csv", "executed.ipynb", "../escape.py", "/abs.py", "a//b"):
        result = run(client, scratch_root, project, nb, extra_files={name: b""})
        assert result.status == "refused" and "not allowed" in result.reason, name
    assert run(client, scratch_root, project, b"{not json").status == "refused"


# ------------------------------------------------------------------------------- isolation


@pytest.fixture
def canary_on_a_bridge(client):
    with bridge_canary(client) as found:
        yield found


def test_no_network_a_canary_on_the_host_hears_nothing(
    client, scratch_root, project, canary_on_a_bridge
):
    network, gateway, canary = canary_on_a_bridge
    # control: a container of the same image and uid, on the canary's network, is heard
    control = new_token()
    probe = in_control(client, network, "tcp", gateway, canary.port, control, user="1000")
    deadline = time.monotonic() + 5
    while not canary.saw(control) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert canary.saw(control), ("the canary doesn't work", probe)

    token = new_token()
    nb = notebook(
        "import os, socket\n"
        f"host, port, token = {gateway!r}, {canary.port}, {token!r}\n"
        "lines = []\n"
        "try:\n"
        "    with socket.create_connection((host, port), timeout=2) as s:\n"
        "        s.sendall(token.encode())\n"
        "    lines.append('SENT')\n"
        "except Exception as e:\n"
        "    lines.append(f'{type(e).__name__}: {e}')\n"
        "lines.append('interfaces: ' + ' '.join(sorted(os.listdir('/sys/class/net'))))\n"
        "open(os.environ['HAVRE_OUTPUTS_DIR'] + '/network.txt', 'w')"
        ".write('\\n'.join(lines))"
    )
    result = run(client, scratch_root, project, nb)
    time.sleep(SETTLE)
    assert result.status == "completed", result.reason + result.log
    report = result.outputs["network.txt"].decode().splitlines()
    assert "SENT" not in report[0] and "Error" in report[0], report
    assert "interfaces: lo" in report  # nothing but loopback
    assert not canary.saw(token), "the canary on the host heard the re-executed notebook"


def test_hardening_seen_from_inside(client, scratch_root, project):
    nb = notebook(
        "import os\n"
        "out = os.environ['HAVRE_OUTPUTS_DIR']\n"
        "status = [l for l in open('/proc/self/status') "
        "if l.split(':')[0] in ('Uid', 'Gid', 'CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs')]\n"
        "open(f'{out}/status.txt', 'w').write(''.join(status))\n"
        "def attempt(path):\n"
        "    try:\n"
        "        open(path, 'w').write('planted')\n"
        "        return 'WROTE'\n"
        "    except OSError as e:\n"
        "        return f'{type(e).__name__}: {e.strerror}'\n"
        "open(f'{out}/writes.txt', 'w').write("
        "f\"data {attempt('/data/planted')}\\nroot {attempt('/usr/planted')}\\n\""
        "f\"docker.sock {os.path.exists('/var/run/docker.sock')}\")\n"
        # things the collector must not follow or read
        "os.symlink('/data/cohort.csv', f'{out}/data-link.csv')\n"
        "os.symlink('/data', f'{out}/data-dir')\n"
        "os.symlink('/etc/passwd', f'{out}/passwd')\n"
        "os.mkfifo(f'{out}/pipe')"
    )
    result = run(client, scratch_root, project, nb)
    assert result.status == "completed", result.reason + result.log
    status = dict(
        (k, v.split())
        for k, v in (
            line.split(":", 1) for line in result.outputs["status.txt"].decode().splitlines()
        )
    )
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == ["0000000000000000"]
    assert status["Uid"] == ["1000"] * 4 and status["Gid"] == ["1000"] * 4
    assert status["NoNewPrivs"] == ["1"]
    writes = result.outputs["writes.txt"].decode().splitlines()
    assert writes[0] == "data OSError: Read-only file system"
    assert writes[1] == "root OSError: Read-only file system"
    assert writes[2] == "docker.sock False"
    assert not (project.data_path / "planted").exists()
    assert set(result.outputs) == {"status.txt", "writes.txt"}
    assert sorted(s.split(":")[0] for s in result.skipped) == [
        "data-dir",
        "data-link.csv",
        "passwd",
        "pipe",
    ]


def test_outputs_folder_swapped_for_a_link_is_not_followed(client, scratch_root, project):
    nb = notebook(
        "import os, shutil\n"
        "out = os.environ['HAVRE_OUTPUTS_DIR']\n"
        "shutil.rmtree(out)\n"
        "os.symlink('/etc', out)  # on the host, /etc is the host's"
    )
    result = run(client, scratch_root, project, nb)
    assert result.status == "refused", result.reason + result.log
    assert "outputs/ is not a folder" in result.reason
    assert result.outputs == {}


def test_collector_refuses_too_many_files(tmp_path):
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    for i in range(4):
        (outputs / "sub" / f"f{i}.csv").write_text("x\n")
    assert len(collect_outputs(outputs, CollectionLimits(max_files=4))[0]) == 4
    with pytest.raises(Exception, match="more than 3 files"):
        collect_outputs(outputs, CollectionLimits(max_files=3))
    with pytest.raises(Exception, match="larger than 1 bytes"):
        collect_outputs(outputs, CollectionLimits(max_file_bytes=1))


# ------------------------------------------------------------------------------- failures


def test_timeout_kills_the_container_and_reports_timeout(client, scratch_root, project):
    seen: dict = {}
    stop = threading.Event()

    def watch() -> None:  # inspect the running container (it lives ~5 s)
        while not stop.is_set() and not seen:
            for container in leftover_containers(client):
                seen.update(client.api.inspect_container(container.id))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    nb = notebook(
        "open('/home/researcher/outputs/started.txt', 'w').write('yes')",
        "import time\ntime.sleep(60)",
    )
    try:
        result = run(client, scratch_root, project, nb, timeout_seconds=5)
    finally:
        stop.set()
        watcher.join(5)
    assert result.status == "timeout", result.reason + result.log
    assert "killed" in result.reason
    assert result.outputs.get("started.txt") == b"yes"  # what it saved so far is returned
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(result.container_id)

    # the container, as Docker ran it
    host, config = seen["HostConfig"], seen["Config"]
    assert host["NetworkMode"] == "none" and config.get("NetworkDisabled") is True
    assert host["CapDrop"] == ["ALL"] and not host["Privileged"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["PidsLimit"] == 256 and host["Memory"] == host["MemorySwap"] == 1 * GIB
    assert host["CpuQuota"] == 100_000 and host["CpuPeriod"] == 100_000
    assert config["User"] == "1000:1000"
    assert config["Image"].startswith("sha256:")
    mounts = {m["Destination"]: m for m in seen["Mounts"]}
    params_file = "/home/researcher/.havre-sdc-params.json"  # the forced SDC parameters
    assert set(mounts) == {"/data", "/home/researcher", params_file}
    assert mounts["/data"]["RW"] is False and mounts["/home/researcher"]["RW"] is True
    assert mounts[params_file]["RW"] is False
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["HAVRE_TRUSTED_REEXECUTION"] == "1" and env["HAVRE_SDC_PARAMS"] == params_file
    assert not any("docker.sock" in m["Source"] for m in seen["Mounts"])


def test_a_raising_cell_fails_with_the_traceback(client, scratch_root, project):
    nb = notebook("x = 41", "raise ValueError(f'deliberate failure {x + 1}')", "never = 1")
    result = run(client, scratch_root, project, nb)
    assert result.status == "failed"
    assert result.exit_code not in (0, None)
    executed = nbformat.reads(result.executed_notebook.decode(), as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "ValueError"
    assert errors[0].evalue == "deliberate failure 42"
    traceback = ANSI.sub("", "\n".join(errors[0].traceback))
    assert "raise ValueError" in traceback and "deliberate failure" in traceback
    assert "deliberate failure 42" in result.log
    assert "PapermillExecutionError" in result.log


def test_images_off_the_list_or_absent_are_refused_and_never_pulled(client, scratch_root, project):
    nb = notebook("x = 1")
    off_list = run(client, scratch_root, project, nb, allowed_images=("havre/other:1",))
    assert off_list.status == "refused" and "allow-list" in off_list.reason
    absent_image = "havre/notebook:absent-reexecution-test"
    absent = replace(project, image=absent_image)
    missing = run(
        client, scratch_root, absent, nb, image=absent_image, allowed_images=(absent_image,)
    )
    assert missing.status == "refused" and "never pulls" in missing.reason
    not_projects = run(
        client,
        scratch_root,
        project,
        nb,
        image="havre/egress:0.1.0",
        allowed_images=(IMAGE, "havre/egress:0.1.0"),
    )
    assert not_projects.status == "refused" and "project" in not_projects.reason
    for result in (off_list, missing, not_projects):
        assert result.container_id is None and result.executed_notebook is None
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(absent_image)
    assert json.loads(json.dumps(trusted_record(missing, {"request_id": "r"})))["status"] == (
        "refused"
    )
