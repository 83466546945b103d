"""The SDC badge through the live enclave (issue #11, defect 4): a file changed after the
library checked it is flagged to the checker, and a genuine count table still passes.

Alice runs the researcher's library (``havre.safe``) in her real notebook server: two count
tables. She then edits one by hand (a count changed, as if "tidied up"), adds both to a
request through the egress service's API and submits. Olivia, a checker, sees in the JSON view
(and on the request page) the edited file as "changed after the library checked it", with no
library verdict, and the untouched one as a pass.
"""

from __future__ import annotations

import pytest

from tests.integration.test_egress_flow import Egress

pytestmark = pytest.mark.docker

SESSION = "badge-live"
LIBRARY_CODE = f"""
import numpy as np, pandas as pd
from havre.safe import Session
rng = np.random.default_rng(3)
df = pd.DataFrame({{"region": rng.choice(["north", "south"], 400),
                    "sex": rng.choice(["female", "male"], 400)}})
s = Session("outputs", name={SESSION!r}, replace=True, show=False)
s.crosstab(df.region, df.sex)
s.crosstab(df.sex, df.region)
s.finalise()
"""
EDIT_CODE = f"""
path = "outputs/{SESSION}/output_1.csv"
lines = open(path).read().splitlines()
cells = lines[1].split(",")
cells[1] = str(int(cells[1]) + 1)
lines[1] = ",".join(cells)
open(path, "w").write("\\n".join(lines) + "\\n")
"""


def test_a_file_replaced_after_the_library_check_is_flagged_to_checkers(enclave, alice_cardio):
    alice, _container = alice_cardio
    for code in (LIBRARY_CODE, EDIT_CODE):
        out = alice.run_code("cardio", code, timeout=120)
        assert out["error"] is None, out

    researcher = Egress(alice)
    rid = researcher.ok(
        "POST", "api/requests", 201, json={"project": "cardio", "title": "Badge, live"}
    )["id"]
    for name in ("output_0.csv", "output_1.csv"):
        researcher.ok("POST", f"api/requests/{rid}/files", 201, json={"path": f"{SESSION}/{name}"})
    researcher.ok(
        "PUT",
        f"api/requests/{rid}/groups/main",
        json={"context": "Counts by region and sex", "controls": "Cells of 10 or more"},
    )
    assert researcher.ok("POST", f"api/requests/{rid}/submit")["state"] == "submitted"

    olivia = Egress(enclave.user("olivia"))
    files = {f["path"]: f for f in olivia.ok("GET", f"api/requests/{rid}")["files"]}
    genuine, edited = files[f"{SESSION}/output_0.csv"], files[f"{SESSION}/output_1.csv"]

    assert genuine["check"]["library"]["status"] == "matched"
    assert genuine["check"]["library"]["statistic"] == "count"
    assert genuine["check"]["badge"]["verdict"] == "pass"

    library = edited["check"]["library"]
    assert library["status"] == "changed"
    assert "Changed after the library checked it" in library["message"]
    assert "verdict" not in library  # the library's verdict was about other bytes
    assert edited["check"]["badge"]["verdict"] == edited["check"]["sdc"]["verdict"] == "review"

    page = olivia.call("GET", f"requests/{rid}")
    assert page.status_code == 200
    assert "Changed after the library checked it." in page.text
