#!/usr/bin/env python3
"""Re-execution benchmark: the trusted runner against running the same notebook directly.

Run from the repository root (as root, with the notebook image built)::

    .venv/bin/python benchmarks/reexecution_benchmark.py             # 5 runs, 200,000 rows
    .venv/bin/python benchmarks/reexecution_benchmark.py --runs 2 --rows 10000 --no-append

One notebook (a parameters cell, then: read a CSV from the data folder, a pandas crosstab, write
it to the outputs folder) is run, interleaved so that machine noise hits every way alike:

* **trusted**: ``egress.reexecution.engine.run_notebook`` (scratch folder, the hardened network-less
  container, papermill, collecting the outputs, removing the container and the folder); timed
  from the call to its return;
* **docker run**: ``docker run --rm`` of the same image running the same papermill command, with
  the data and a work folder mounted, and none of the hardening (default bridge network,
  writable root, no limits), via the ``docker`` command line; timed around the command;
* **docker SDK, plain**: the same plain container through the docker SDK (create, start,
  wait, remove), to tell the ``docker`` command line's own cost from the hardening's;
* **host**: ``python -m papermill`` in this venv on the host (when papermill and ipykernel are
  installed there), reading the same CSV.

Every run's table is checked to be the same bytes. It prints a Markdown table of the medians and
appends it, with the machine and the command, to ``benchmarks/reexecution-README.md`` (unless
``--no-append``). A benchmark, not a test: it asserts nothing about times.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import docker
import nbformat
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egress.reexecution.engine import run_notebook  # noqa: E402
from egress.reexecution.model import ReexecutionRequest  # noqa: E402
from egress.reexecution.scratch import parameters_yaml  # noqa: E402
from havre.enclave.config import DEFAULT_IMAGE, GIB, Limits, Project  # noqa: E402

README = Path(__file__).with_name("reexecution-README.md")
UID = GID = 1000

ANALYSIS = """
import os
import pandas as pd
df = pd.read_csv(os.path.join(data_dir, "cohort.csv"))
table = pd.crosstab(df["region"], [df["sex"], df["age_band"]])
out = os.environ.get("HAVRE_OUTPUTS_DIR", "outputs")
os.makedirs(out, exist_ok=True)
table.to_csv(os.path.join(out, "table.csv"))
"""


def make_notebook() -> bytes:
    nb = new_notebook(
        cells=[
            new_code_cell('data_dir = "/data"', metadata={"tags": ["parameters"]}),
            new_code_cell(ANALYSIS),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    return nbformat.writes(nb).encode()


def make_data(folder: Path, rows: int) -> None:
    rng = random.Random(7)
    regions = [f"region-{i:02d}" for i in range(20)]
    bands = ["0-17", "18-39", "40-64", "65+"]
    lines = ["region,sex,age_band"]
    for _ in range(rows):
        lines.append(f"{rng.choice(regions)},{rng.choice('FM')},{rng.choice(bands)}")
    (folder / "cohort.csv").write_text("\n".join(lines) + "\n")
    (folder / "cohort.csv").chmod(0o644)
    folder.chmod(0o755)


def papermill_args(params: str) -> list[str]:
    return [
        "papermill",
        "input.ipynb",
        "executed.ipynb",
        "-f",
        params,
        "--kernel",
        "python3",
        "--language",
        "python",
        "--no-progress-bar",
    ]


def fresh_workdir(root: Path, notebook: bytes, params: bytes, owner: bool) -> Path:
    work = Path(tempfile.mkdtemp(dir=root))
    (work / "input.ipynb").write_bytes(notebook)
    (work / "params.yaml").write_bytes(params)
    (work / "outputs").mkdir()
    if owner:
        for path in (work, work / "input.ipynb", work / "params.yaml", work / "outputs"):
            os.chown(path, UID, GID)
    return work


def time_trusted(client, request, root: Path) -> tuple[float, bytes, float]:
    t0 = time.perf_counter()
    result = run_notebook(client, request, workdir_root=root, allowed_images=(request.image,))
    elapsed = time.perf_counter() - t0
    if result.status != "completed":
        raise SystemExit(f"trusted run {result.status}: {result.reason}\n{result.log}")
    return elapsed, result.outputs["table.csv"], result.duration_s


def time_docker_run(image: str, data: Path, root: Path, notebook: bytes) -> tuple[float, bytes]:
    work = fresh_workdir(root, notebook, parameters_yaml({}), owner=True)
    command = [
        "docker",
        "run",
        "--rm",
        "-v",
        f"{data}:/data:ro",
        "-v",
        f"{work}:/home/researcher",
        "-w",
        "/home/researcher",
        "-e",
        "HAVRE_OUTPUTS_DIR=/home/researcher/outputs",
        image,
        *papermill_args("params.yaml"),
    ]
    try:
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        elapsed = time.perf_counter() - t0
        return elapsed, (work / "outputs" / "table.csv").read_bytes()
    finally:
        shutil.rmtree(work)


def time_docker_sdk(client, image: str, data: Path, root: Path, notebook: bytes):
    """The same plain container as ``time_docker_run``, through the SDK (no CLI process)."""
    work = fresh_workdir(root, notebook, parameters_yaml({}), owner=True)
    try:
        t0 = time.perf_counter()
        container = client.containers.create(
            image,
            papermill_args("params.yaml"),
            volumes={
                str(data): {"bind": "/data", "mode": "ro"},
                str(work): {"bind": "/home/researcher", "mode": "rw"},
            },
            working_dir="/home/researcher",
            environment={"HAVRE_OUTPUTS_DIR": "/home/researcher/outputs"},
            labels={"havre.project": "rxbench"},
        )
        try:
            container.start()
            if container.wait()["StatusCode"] != 0:
                raise SystemExit(container.logs().decode(errors="replace"))
        finally:
            container.remove(force=True)
        elapsed = time.perf_counter() - t0
        return elapsed, (work / "outputs" / "table.csv").read_bytes()
    finally:
        shutil.rmtree(work)


def time_host(data: Path, root: Path, notebook: bytes) -> tuple[float, bytes]:
    work = fresh_workdir(root, notebook, parameters_yaml({"data_dir": str(data)}), owner=False)
    env = {**os.environ, "HAVRE_OUTPUTS_DIR": str(work / "outputs")}
    command = [sys.executable, "-m", *papermill_args("params.yaml"), "--cwd", str(work)]
    try:
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=work, env=env)
        elapsed = time.perf_counter() - t0
        return elapsed, (work / "outputs" / "table.csv").read_bytes()
    finally:
        shutil.rmtree(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--no-append", action="store_true", help="don't write the README")
    args = parser.parse_args()

    client = docker.from_env(version="auto")
    client.images.get(args.image)  # never pulled: fails here if it isn't built
    host_ok = all(importlib.util.find_spec(m) for m in ("papermill", "ipykernel"))
    notebook = make_notebook()

    with tempfile.TemporaryDirectory(prefix="havre-rx-bench-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "data"
        data.mkdir()
        make_data(data, args.rows)
        root = tmp_path / "work"
        root.mkdir()
        project = Project(
            slug="rxbench",
            title="Re-execution benchmark",
            members=frozenset(),
            data_path=data,
            image=args.image,
            limits=Limits(cpu=2.0, memory_bytes=2 * GIB, pids=512),
        )
        request = ReexecutionRequest(
            notebook=notebook, parameters={}, project=project, image=args.image
        )

        samples: dict[str, list[float]] = {
            "trusted": [],
            "docker run": [],
            "docker SDK, plain": [],
            "host": [],
        }
        container_s: list[float] = []
        tables: set[bytes] = set()
        # one warm-up of each (page cache, image layers), not counted
        time_trusted(client, request, root)
        time_docker_run(args.image, data, root, notebook)
        time_docker_sdk(client, args.image, data, root, notebook)
        if host_ok:
            time_host(data, root, notebook)
        for i in range(args.runs):
            elapsed, table, inside = time_trusted(client, request, root)
            samples["trusted"].append(elapsed)
            container_s.append(inside)
            tables.add(table)
            elapsed, table = time_docker_run(args.image, data, root, notebook)
            samples["docker run"].append(elapsed)
            tables.add(table)
            elapsed, table = time_docker_sdk(client, args.image, data, root, notebook)
            samples["docker SDK, plain"].append(elapsed)
            tables.add(table)
            if host_ok:
                elapsed, table = time_host(data, root, notebook)
                samples["host"].append(elapsed)
                tables.add(table)
            print(
                f"run {i + 1}/{args.runs}: "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in samples.items() if v),
                flush=True,
            )
        if len(tables) != 1:
            raise SystemExit("the ways of running gave different tables")
        leftovers = client.containers.list(all=True, filters={"label": "havre.project=rxbench"})
        if leftovers or os.listdir(root):
            raise SystemExit("leftover containers or work folders")

    medians = {k: statistics.median(v) for k, v in samples.items() if v}
    base = medians["docker run"]
    host = medians.get("host")
    lines = [
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.runs} runs, {args.rows:,} rows",
        "",
        "```",
        f".venv/bin/python benchmarks/reexecution_benchmark.py --runs {args.runs} "
        f"--rows {args.rows}",
        "```",
        "",
        "| way of running the notebook | median | runs (s) | vs docker run | vs host |",
        "|---|---:|---|---:|---:|",
    ]
    for name, value in medians.items():
        runs = ", ".join(f"{x:.2f}" for x in samples[name])
        vs_host = "" if host is None else f"{value - host:+.2f} s"
        lines.append(f"| {name} | {value:.2f} s | {runs} | {value - base:+.2f} s | {vs_host} |")
    lines += [
        "",
        f"Trusted run, container start to exit (`duration_s`): median "
        f"{statistics.median(container_s):.2f} s; the rest of the trusted time is creating the "
        "scratch folder and the container, reading the outputs and removing both.",
        f"Machine: {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end; "
        f"Docker {client.version().get('Version')}; image {args.image}.",
        "",
    ]
    if not host_ok:
        lines.insert(-1, "Host run skipped: papermill or ipykernel is not installed in this venv.")
    text = "\n".join(lines)
    print()
    print(text)
    if not args.no_append:
        with README.open("a") as f:
            f.write("\n" + text)
        print(f"appended to {README}")
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
