"""What the desktop's RFB relay adds to a key's way (issue #17, inbound paste).

Every key and mouse event of a desktop now crosses the relay (images/desktop/rfb_relay.py)
between websockify and Xvnc. This measures that hop alone, in one process pair on this
machine: a stand-in VNC server on a Unix socket (it greets, then answers each KeyEvent with 8
bytes at once) is reached directly (the baseline, as websockify reached Xvnc before) and
through the relay (the script the image runs, started as its own process as in the image),
in interleaved runs; each sample is one KeyEvent's round trip. Prints the median and p95 of
each and their ratio, the machine's load, and writes a summary to ``--output``.

    .venv/bin/python benchmarks/desktop_relay.py [--runs 9] [--keys 2000] [--output FILE]

The whole key-to-screen path (noVNC, websockify, Xvnc, Chromium, the picture back) is
benchmarks/desktop_session.py's; this is the relay's share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from host_facts import cpu_model  # noqa: E402

RELAY = REPO / "images" / "desktop" / "rfb_relay.py"

HANDSHAKE = b"RFB 003.008\n\x01\x01"
KEY = struct.pack(">BBxxI", 4, 1, 0xFFE1)


async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The stand-in Xvnc: greeting, then 8 bytes back for each KeyEvent."""
    writer.write(b"RFB 003.008\n")
    await writer.drain()
    await reader.readexactly(len(HANDSHAKE))
    try:
        while True:
            await reader.readexactly(8)
            writer.write(b"\0" * 8)
            await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()


async def one_run(path: str, keys: int) -> list[float]:
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readexactly(12)
    writer.write(HANDSHAKE)
    samples = []
    for _ in range(keys):
        start = time.perf_counter()
        writer.write(KEY)
        await writer.drain()
        await reader.readexactly(8)
        samples.append((time.perf_counter() - start) * 1000)
    writer.close()
    await writer.wait_closed()
    return samples


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]


async def main_async(runs: int, keys: int) -> dict:
    folder = tempfile.mkdtemp(prefix="havre-relay-bench-")
    xvnc, front = os.path.join(folder, "xvnc.sock"), os.path.join(folder, "vnc.sock")
    stand_in = await asyncio.start_unix_server(server, path=xvnc)
    process = subprocess.Popen(
        [sys.executable, str(RELAY), "--listen", front, "--server", xvnc, "--paste", "none"]
        + ["--user", "bench", "--project", "bench"],
        stderr=subprocess.DEVNULL,
    )
    for _ in range(500):
        if os.path.exists(front):
            break
        await asyncio.sleep(0.01)
    await one_run(front, 50)  # warm-up
    await one_run(xvnc, 50)
    samples: dict[str, list[float]] = {"direct": [], "relay": []}
    per_run: list[dict] = []
    for i in range(runs):
        order = ("direct", "relay") if i % 2 == 0 else ("relay", "direct")
        for mode in order:
            got = await one_run(xvnc if mode == "direct" else front, keys)
            samples[mode] += got
            per_run.append({"run": i + 1, "mode": mode, "median_ms": statistics.median(got)})
    await asyncio.sleep(0.2)  # the relay and the stand-in see each connection close
    process.terminate()
    process.wait(10)
    stand_in.close()
    return {"samples": samples, "per_run": per_run}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = asyncio.run(main_async(args.runs, args.keys))
    load_after = os.getloadavg()
    summary = {}
    for mode, values in result["samples"].items():
        summary[mode] = {"median_ms": statistics.median(values), "p95_ms": p95(values)}
    ratio = summary["relay"]["median_ms"] / summary["direct"]["median_ms"]
    print(f"{args.runs} interleaved runs x {args.keys} KeyEvents, round trip over Unix sockets")
    for mode, row in summary.items():
        print(f"  {mode:<7} median {row['median_ms']:.3f} ms  p95 {row['p95_ms']:.3f} ms")
    extra = summary["relay"]["median_ms"] - summary["direct"]["median_ms"]
    print(f"  relay/direct median ratio {ratio:.2f} (+{extra:.3f} ms per event)")
    print(f"  load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {cpu_model()}")
    if args.output:
        args.output.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "runs": args.runs,
                    "keys": args.keys,
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                    "load_before": load_before,
                    "load_after": load_after,
                    "summary": summary,
                    "ratio_median": ratio,
                    "per_run": result["per_run"],
                },
                indent=1,
            )
            + "\n"
        )
        print(f"  samples' summary written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
