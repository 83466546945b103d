"""``havre up`` says what it is doing on a terminal and nothing more on a pipe.

Run for real (the command line, the Docker engine): an enclave config from ``havre demo-init``
and a hub image that is not on the host, so ``havre up`` stops at its first step with its
sentence, having started nothing. On a terminal the step and what it waits on come first; on a
pipe only the sentence.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.unit.test_progress import LINE, _run_on_a_terminal

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory):
    state = tmp_path_factory.mktemp("progress") / "state"
    made = subprocess.run(
        [sys.executable, "-m", "havre.host.cli", "demo-init", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return state / "enclave.yaml"


def _argv(config):
    return [sys.executable, "-m", "havre.host.cli", "up", "--config", str(config),
            "--hub-image", "havre/no-such-image:0"]  # fmt: skip


SENTENCE = "havre: image havre/no-such-image:0 is not on this host"


def test_havre_up_shows_its_step_on_a_terminal(demo_config, tmp_path):
    _out, err = _run_on_a_terminal(_argv(demo_config), tmp_path / "unused", "never")
    step = "checking the images: waiting on havre/no-such-image:0"
    assert re.search(LINE.format(label="havre up", text=re.escape(step)), err), err
    assert SENTENCE in err


def test_havre_up_is_quiet_on_a_pipe(demo_config):
    env = {k: v for k, v in os.environ.items() if k != "HAVRE_PROGRESS"}
    run = subprocess.run(_argv(demo_config), capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [SENTENCE + ": build it with `bash images/build.sh`"
                                                " (or load it with `docker load`)"]  # fmt: skip
