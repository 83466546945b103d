"""SQLite writers wait in line on a lock file (egress.store.db.write_session), across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlalchemy import text

from egress.store.db import make_engine, write_session

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    lock, marker = sys.argv[1], sys.argv[2]
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(0.3)
    open(marker, "w").write("released")
    os.close(fd)
    """
)


def test_a_writer_waits_for_the_writer_ahead_of_it_in_another_process(tmp_path):
    db = tmp_path / "egress.db"
    engine = make_engine(f"sqlite:///{db}")
    with write_session(engine) as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    marker = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"{db}-writers.lock", str(marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with write_session(engine) as session:
            # only once the other writer has finished (its marker is written before release)
            assert marker.read_text() == "released"
            session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        holder.wait(timeout=30)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    engine.dispose()


def test_a_killed_writer_never_blocks_the_next(tmp_path):
    db = tmp_path / "egress.db"
    engine = make_engine(f"sqlite:///{db}")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.replace("0.3", "600"), f"{db}-writers.lock", "/dev/null"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # the kernel releases its lock
    holder.wait(timeout=30)
    with write_session(engine) as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    engine.dispose()
