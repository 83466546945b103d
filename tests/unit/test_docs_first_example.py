"""The safe-analysis guide's first example runs, as written, on the demo projects' data, and
the histogram PNGs the library writes carry no metadata for the checkers to look at (issue #20:
the example used a file and columns the demo doesn't have; every ``safe.hist`` PNG was flagged
because of matplotlib's own ``Software`` tag)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import havre.safe as safe  # noqa: E402
from egress.files.checks import check_file  # noqa: E402
from havre.host.demo import DEMO_PROJECTS, DEMO_ROWS  # noqa: E402
from havre.host.synthetic_data import write_hospital_stays_csv  # noqa: E402
from havre.safe.session import ENV_OUTPUTS_DIR  # noqa: E402

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "researcher-safe-analysis.md"
#: where a project server sees the demo data (the project's data folder, mounted at /data)
DEMO_DATA = "/data/hospital_stays.csv"


def first_example() -> str:
    """The first Python block of the guide's "Quick start"."""
    quick_start = GUIDE.read_text(encoding="utf-8").split("## Quick start", 1)[1]
    found = re.search(r"```python\n(.*?)```", quick_start, re.S)
    assert found, "no Python example under Quick start"
    return found.group(1)


def metadata_warnings(name: str, data: bytes) -> list[str]:
    result = check_file(name, data)
    assert result.outcome == "accepted", result
    return [w for w in result.warnings if "metadata" in w]


@pytest.mark.parametrize(("project", "seed"), [(p[0], p[2]) for p in DEMO_PROJECTS])
def test_the_guide_s_first_example_runs_on_the_demo_data(tmp_path, monkeypatch, project, seed):
    code = first_example()
    assert DEMO_DATA in code
    data = tmp_path / "data" / "hospital_stays.csv"
    data.parent.mkdir()
    write_hospital_stays_csv(data, DEMO_ROWS, seed)  # as havre.host.demo writes it
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_OUTPUTS_DIR, raising=False)
    namespace: dict[str, object] = {}
    exec(compile(code.replace(DEMO_DATA, str(data)), str(GUIDE), "exec"), namespace)
    plt.close("all")

    session = safe.get_session()
    assert session.outputs_dir == tmp_path / "outputs"
    kinds = [output.output_type for output in session.outputs.values()]
    assert kinds == ["table", "table", "regression", "histogram"], kinds
    counts = namespace["counts"].safe_output
    if project == "cardio":  # what the guide's comment and badge say
        assert counts.status == "fail" and "4 of 40 cells fail (threshold 4)" in counts.summary
    assert (session.path / "results.json").is_file()

    # the histogram's PNG passes the egress service's check without a metadata warning
    png = next(session.path.glob("*.png"))
    assert metadata_warnings(png.name, png.read_bytes()) == []


def test_matplotlib_s_own_png_is_flagged_so_the_check_above_can_fail():
    # control: matplotlib's default PNG (a Software tag) is what the server flags
    figure, ax = plt.subplots()
    ax.plot([1, 2, 3])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    assert any("tEXt" in w for w in metadata_warnings("plain.png", buffer.getvalue()))
