"""The skip policy: in CI a skip outside the allow-list fails the run; allowed skips don't.

Each case runs a real pytest session (pytester) with the policy loaded, and the same test file
in lenient mode is the positive control: there the same skip leaves the run green.
"""

from __future__ import annotations

import pytest

from tests.skip_policy import ALLOWED_SKIPS, STRICT_ENV

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_runs():
    assert 1 + 1 == 2

def test_skips():
    pytest.skip({reason!r})
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, reason: str, strict: bool):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(STRICT_ENV, "1" if strict else "0")
    pytester.makepyfile(test_sample=SKIPPING.format(reason=reason))
    return pytester.runpytest_inprocess("-p", "tests.skip_policy")


def test_a_skip_outside_the_list_fails_a_strict_run(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "needs a running Docker engine", strict=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*1 skip(s) outside the allow-list FAIL the run*", "*test_skips: needs a running Docker*"]
    )


def test_the_same_skip_passes_a_lenient_run(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "needs a running Docker engine", strict=False)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*would fail a CI run*"])


def test_an_allowed_skip_passes_a_strict_run_and_is_counted(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "creating device files needs privileges", strict=True)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*[[]1 skipped[]] /creating device files needs privileges/*"])


def test_a_module_skipped_at_collection_fails_a_strict_run(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(STRICT_ENV, "1")
    pytester.makepyfile(
        test_gone="import pytest\npytest.importorskip('no_such_module_anywhere')\n",
        test_here="def test_ok():\n    pass\n",
    )
    result = pytester.runpytest_inprocess("-p", "tests.skip_policy")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no_such_module_anywhere*"])


def test_ci_true_turns_strict_mode_on(pytester, monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_sample=SKIPPING.format(reason="needs chromium"))
    result = pytester.runpytest_inprocess("-p", "tests.skip_policy")
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_every_allowed_skip_says_why():
    assert ALLOWED_SKIPS
    for allowed in ALLOWED_SKIPS:
        assert len(allowed.why) > 20, allowed


def test_the_cluster_skips_are_never_allowed():
    """A missing test cluster can't turn CI green: no allowed pattern matches its skips, and
    each of those skips is a sentence the cluster harness really writes."""
    from pathlib import Path

    from tests.cluster import conftest as cluster_conftest
    from tests.skip_policy import NEVER_ALLOWED

    harness = Path("tests/cluster/engines.py").read_text()
    prefix = "needs a test cluster: "
    assert prefix in Path(cluster_conftest.__file__).read_text()
    for reason in NEVER_ALLOWED:
        assert not any(allowed.matches(reason) for allowed in ALLOWED_SKIPS), reason
        assert reason.removeprefix(prefix).split("`")[0] in harness, reason
