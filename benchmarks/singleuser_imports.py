#!/usr/bin/env python3
"""What the single-user server's imports cost: bare Jupyter Server, `jupyterhub-singleuser`'s
plain imports, and `havre-singleuser`'s lean ones (havre/notebook/singleuser.py).

Run from the repository root::

    .venv/bin/python benchmarks/singleuser_imports.py --image havre/notebook:0.1.0
    .venv/bin/python benchmarks/singleuser_imports.py --python /path/to/notebook-venv/bin/python

Each sample is a fresh interpreter (in a throw-away container of the image: no network, read-
only root, a /tmp tmpfs, the image's user; or the given Python with this checkout on its path)
that imports what the server imports before it serves:

* ``bare``: ``jupyter_server.serverapp`` and ``jupyterlab`` (what ``jupyter server`` loads);
* ``plain``: the same and ``jupyterhub.singleuser.extension`` (what ``jupyterhub-singleuser``
  loads);
* ``lean``: the same through ``havre.notebook.singleuser.import_single_user()``.

It records the interpreter's whole CPU time (user + system, start-up included), its peak
resident memory and the number of modules, interleaving the kinds (bare, plain, lean, bare,
...) so machine noise hits all three alike, and prints medians, p95 and the ratios to ``bare``
measured in the same run. Raw samples go to ``benchmarks/results/singleuser-imports-<date>.json``
with the machine's load average before and after. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SAMPLE = r"""
import json, resource, sys, time
kind = sys.argv[1]
import jupyter_server.serverapp, jupyterlab
if kind == "plain":
    import jupyterhub.singleuser.extension
elif kind == "lean":
    from havre.notebook import singleuser
    singleuser.import_single_user()
usage = resource.getrusage(resource.RUSAGE_SELF)
print("SAMPLE " + json.dumps({
    "kind": kind,
    "cpu_s": usage.ru_utime + usage.ru_stime,
    "peak_rss_mib": usage.ru_maxrss / 1024,
    "modules": len(sys.modules),
    "sqlalchemy": "sqlalchemy" in sys.modules,
}))
"""

KINDS = ("bare", "plain", "lean")


def sample_command(args: argparse.Namespace, kind: str) -> list[str]:
    if args.image:
        return [
            "docker", "run", "--rm", "--network", "none", "--read-only",
            "--tmpfs", "/tmp:size=16m", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--cpus", "1",
            "--label", "havre.bench.singleuser-imports=1",
            args.image, "python3", "-c", SAMPLE, kind,
        ]  # fmt: skip
    return [args.python, "-c", SAMPLE, kind]


def run_sample(args: argparse.Namespace, kind: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)} if args.python else None
    out = subprocess.run(
        sample_command(args, kind),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("SAMPLE "):
            return json.loads(line.removeprefix("SAMPLE "))
    raise SystemExit(f"singleuser_imports: a {kind} sample printed nothing:\n{out.stderr[-2000:]}")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summarise(samples: list[dict]) -> dict:
    summary: dict[str, dict] = {}
    for kind in KINDS:
        mine = [s for s in samples if s["kind"] == kind]
        summary[kind] = {
            field: {
                "median": statistics.median(s[field] for s in mine),
                "p95": p95([s[field] for s in mine]),
            }
            for field in ("cpu_s", "peak_rss_mib", "modules")
        }
        summary[kind]["sqlalchemy_loaded"] = sorted({s["sqlalchemy"] for s in mine})
    for kind in ("plain", "lean"):
        summary[kind]["ratio_to_bare"] = {
            field: summary[kind][field]["median"] / summary["bare"][field]["median"]
            for field in ("cpu_s", "peak_rss_mib")
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", help="the notebook image to sample in (docker run)")
    where.add_argument("--python", help="a Python with the notebook image's packages")
    parser.add_argument("--runs", type=int, default=7, help="samples of each kind")
    parser.add_argument("--output", type=Path, help="JSON results file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    output = args.output or (
        REPO / "benchmarks" / "results" / f"singleuser-imports-{dt.date.today().isoformat()}.json"
    )
    load_before = os.getloadavg()
    run_sample(args, "bare")  # warm the page cache; not counted
    samples = [run_sample(args, kind) for _ in range(args.runs) for kind in KINDS]
    summary = summarise(samples)
    result = {
        "command": " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "where": args.image or args.python,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "summary": summary,
        "samples": samples,
    }
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'kind':<6} {'CPU s (median / p95)':<22} {'peak RSS MiB':<14} modules  vs bare")
    for kind in KINDS:
        s = summary[kind]
        ratio = s.get("ratio_to_bare")
        vs = f"{ratio['cpu_s']:.2f}x CPU, {ratio['peak_rss_mib']:.2f}x RSS" if ratio else ""
        print(
            f"{kind:<6} {s['cpu_s']['median']:.3f} / {s['cpu_s']['p95']:.3f}{'':<9} "
            f"{s['peak_rss_mib']['median']:<14.1f} {s['modules']['median']:<8.0f} {vs}"
        )
    print(f"load average before / after: {load_before} / {result['load_average_after']}")
    print(f"raw samples: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
