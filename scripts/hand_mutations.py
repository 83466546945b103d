"""Make the code wrong on purpose, once per rule, and check that a test notices.

Each mutation below breaks one promise (a permission, a transition, a disclosure rule, the
audit chain, a refused route, membership, a persisted token, a whole snapshot, the skip
policy) in a throw-away git worktree of HEAD, runs the tests that guard it, and puts the code
back. A mutation is *caught* when those tests fail; one that *survives* means the promise has
no test that can fail, which is a defect of the suite.

    .venv/bin/python scripts/hand_mutations.py            # every mutation, a table at the end
    .venv/bin/python scripts/hand_mutations.py -k policy  # those whose name contains "policy"

Needs no root and no Docker (only unit tests run). docs/testing.md records the last results.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "policy: checkers see drafts never submitted",
        "egress/domain/policy.py",
        "    if not (facts.is_member or request.submitted):",
        "    if False:",
        ("tests/unit/egress/test_policy.py",),
    ),
    Mutation(
        "policy: nobody counts as the author (authors could review their own request)",
        "egress/domain/policy.py",
        "        return self.actor.username == self.request.author",
        "        return False",
        ("tests/unit/egress/test_policy.py",),
    ),
    Mutation(
        "workflow: a reviewed request released without approval",
        "egress/domain/workflow.py",
        "    (RequestState.APPROVED, Action.RELEASE): RequestState.RELEASED,",
        "    (RequestState.APPROVED, Action.RELEASE): RequestState.RELEASED,\n"
        "    (RequestState.REVIEWED, Action.RELEASE): RequestState.RELEASED,",
        ("tests/unit/egress/test_workflow.py",),
    ),
    Mutation(
        "sdc: threshold off by one (a cell of 9 passes at threshold 10)",
        "havre/sdc/rules.py",
        "    return (c > 0) & (c < params.threshold)",
        "    return (c > 0) & (c < params.threshold - 1)",
        ("tests/unit/egress/test_sdc_rules.py",),
    ),
    Mutation(
        "sdc: no blank is ever recoverable from the margins",
        "havre/sdc/published.py",
        "    out = np.zeros(pattern.shape, dtype=bool)\n",
        "    out = np.zeros(pattern.shape, dtype=bool)\n    return out\n",
        ("tests/unit/egress/test_sdc_published.py", "tests/unit/egress/test_sdc_tables.py"),
    ),
    Mutation(
        "audit: an edited event's hash is not recomputed",
        "egress/audit/verify.py",
        "            content_ok = ev.compute_hash() == ev.hash\n"
        "        except (TypeError, ValueError):  # e.g. NaN",
        "            content_ok = True\n        except (TypeError, ValueError):  # e.g. NaN",
        ("tests/unit/egress/test_audit.py",),
    ),
    Mutation(
        "download policy: files/ no longer refused",
        "spawner/download_policy.py",
        '    "files": "the raw bytes of a file, for saving or opening in a browser tab",\n',
        "",
        ("tests/unit/test_download_policy.py", "tests/unit/test_download_guard.py"),
    ),
    Mutation(
        "enclave config: a hub group no longer gives membership",
        "havre/enclave/config/model.py",
        "        return username in project.members or project_hub_group(slug) in set(hub_groups)",
        "        return username in project.members",
        ("tests/unit/test_enclave_config.py",),
    ),
    Mutation(
        "identity provider: sign-ins not read back after a restart",
        "havre/idp/tokens.py",
        "        self._load_tokens()\n",
        "        pass\n",
        ("tests/unit/test_oidc_provider.py",),
    ),
    Mutation(
        "outputs folder: a file rewritten within one clock tick is not read twice",
        "havre/enclave/outputs_folder.py",
        "        if started - max(after.st_mtime_ns, after.st_ctime_ns) < SETTLE_SECONDS * 1e9:",
        "        if False:",
        ("tests/unit/egress/test_outputs_folder.py",),
    ),
    Mutation(
        "test suite: a skip outside the allow-list no longer fails a CI run",
        "tests/skip_policy.py",
        "        if self.strict and self.refused and exitstatus in (0, 5):",
        "        if False:",
        ("tests/unit/test_skip_policy.py",),
    ),
    Mutation(
        "identities: outputs folder without the sticky bit (members delete each other's files)",
        "havre/enclave/identities.py",
        '        FolderRule(project_dir / "outputs", reader_uid, gid, 0o3570),',
        '        FolderRule(project_dir / "outputs", reader_uid, gid, 0o2570),',
        ("tests/unit/test_identities.py",),
    ),
    Mutation(
        "identities: a host account's uid can be given to a server",
        "havre/enclave/identities.py",
        "        while n < self.base + self.size and (host.used(n) or n in taken):",
        "        while n < self.base + self.size and n in taken:",
        ("tests/unit/test_identities.py",),
    ),
    Mutation(
        "identities: a freed id is given again",
        "havre/enclave/identities.py",
        "        self.next_id = n + 1",
        "        self.next_id = self.base",
        ("tests/unit/test_identities.py",),
    ),
    Mutation(
        "identities: project data world-readable",
        "havre/enclave/identities.py",
        "        FolderRule(data_dir, 0, gid, 0o750, files_mode=0o640),",
        "        FolderRule(data_dir, 0, gid, 0o755, files_mode=0o644),",
        ("tests/unit/test_identities.py",),
    ),
)


def run(worktree: Path, mutation: Mutation) -> tuple[str, str]:
    path = worktree / mutation.path
    text = path.read_text()
    if text.count(mutation.old) != 1:
        return "NOT APPLIED", "the code it mutates has changed: update the mutation"
    path.write_text(text.replace(mutation.old, mutation.new))
    try:
        result = subprocess.run(
            [str(PYTHON), "-m", "pytest", *mutation.tests, "-x", "-q", "-p", "no:cacheprovider"],
            cwd=worktree,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    finally:
        path.write_text(text)
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    if result.returncode == 0:
        return "SURVIVED", "no test failed"
    return "caught", (failed[0] if failed else result.stdout.strip().splitlines()[-1])[:160]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k in m.name]
    with tempfile.TemporaryDirectory(prefix="havre-mutations-") as folder:
        worktree = Path(folder) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(worktree), "HEAD"],
            check=True,
        )
        try:
            # the pristine tree must pass first, or a "caught" would mean nothing
            for tests in sorted({t for m in chosen for t in m.tests}):
                clean = subprocess.run(
                    [str(PYTHON), "-m", "pytest", tests, "-q", "-p", "no:cacheprovider"],
                    cwd=worktree,
                    capture_output=True,
                    text=True,
                    timeout=1200,
                )
                if clean.returncode != 0:
                    print(f"{tests} fails without any mutation: fix it first", file=sys.stderr)
                    return 2
            rows = [(m.name, *run(worktree, m)) for m in chosen]
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
    print("| mutation | result | first failing test |")
    print("|---|---|---|")
    for name, outcome, detail in rows:
        print(f"| {name} | {outcome} | {detail} |")
    return 0 if all(outcome == "caught" for _, outcome, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
