"""Issue #20: a checker's "viewed" tick per file, kept on the server (it was kept in one
browser's storage: lost on another machine, and a changed file stayed ticked).

Stored per checker and file with the version ticked (``viewed_files``, migration 0004), set by
the file page's form, shown on the file page and the request page; only checkers who may see
the file's contents keep ticks, each sees their own; not audited (a working note: the views are
audited as ``FILE_VIEWED``). The ``service`` fixture runs these on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import update

from egress.domain.policy import PermissionDenied
from egress.store.db import write_session
from egress.store.models import RequestFile
from tests.unit.egress.conftest import ACTORS
from tests.unit.egress.test_core import audit_events, new_request
from tests.unit.egress.test_core import web_service as web_service  # the fixture
from tests.unit.egress.test_web_request_forms import post

alice, olivia, oscar, adam = (ACTORS[n] for n in ("alice", "olivia", "oscar", "adam"))


def viewed(service, actor, rid: str) -> dict[str, bool | None]:
    return {f["path"]: f.get("viewed") for f in service.get_request(actor, rid)["files"]}


def test_a_checker_s_tick_is_kept_per_checker_and_version_and_not_audited(service):
    rid, files = new_request(service, {"notes.txt": "main", "tables/smoking.csv": "main"})
    notes = files["notes.txt"]["id"]
    assert viewed(service, olivia, rid) == {"notes.txt": False, "tables/smoking.csv": False}
    events = len(audit_events(service.engine, rid))

    assert service.set_viewed(olivia, rid, notes, True)["viewed"] is True
    assert viewed(service, olivia, rid) == {"notes.txt": True, "tables/smoking.csv": False}
    assert viewed(service, oscar, rid)["notes.txt"] is False  # another checker: their own ticks
    assert service.set_viewed(olivia, rid, notes, True)["viewed"] is True  # twice: still one
    assert len(audit_events(service.engine, rid)) == events  # a working note, not audited

    # a new version of the file (another release_sha256) shows unticked
    with write_session(service.engine) as session:
        session.execute(
            update(RequestFile).where(RequestFile.id == notes).values(release_sha256="f" * 64)
        )
    assert viewed(service, olivia, rid)["notes.txt"] is False
    service.set_viewed(olivia, rid, notes, True)
    assert viewed(service, olivia, rid)["notes.txt"] is True
    service.set_viewed(olivia, rid, notes, False)  # unticked
    assert viewed(service, olivia, rid)["notes.txt"] is False


def test_only_checkers_who_see_the_contents_keep_ticks(service):
    rid, files = new_request(service, {"notes.txt": "main"})
    notes = files["notes.txt"]["id"]
    for who in (alice, ACTORS["carol"], ACTORS["bob"], adam):  # author, member, stranger, admin
        with pytest.raises(PermissionDenied):
            service.set_viewed(who, rid, notes, True)
    assert viewed(service, alice, rid) == {"notes.txt": None}  # the author sees no tick at all
    assert viewed(service, adam, rid) == {"notes.txt": None}
    draft, drafted = new_request(service, {"notes.txt": "main"}, submit=False)
    with pytest.raises(PermissionDenied):  # a draft: no checker sees it yet
        service.set_viewed(olivia, draft, drafted["notes.txt"]["id"], True)
    service.set_viewed(olivia, rid, notes, True)  # control: a reviewing checker
    assert viewed(service, olivia, rid) == {"notes.txt": True}


def test_the_file_page_s_form_sets_the_tick_and_both_pages_show_it(web_service, service):
    rid, files = new_request(service, {"notes.txt": "main"})
    notes = files["notes.txt"]["id"]

    def file_page(user: str) -> str:
        return requests.get(
            web_service + f"requests/{rid}/files/{notes}", headers={"X-Test-User": user}, timeout=30
        ).text

    def request_page(user: str) -> str:
        return requests.get(
            web_service + f"requests/{rid}", headers={"X-Test-User": user}, timeout=30
        ).text

    assert 'id="viewed-state">Not viewed yet' in file_page("olivia")
    assert 'data-viewed="no"' in request_page("olivia")
    ticked = post(
        web_service,
        rid,
        "olivia",
        action="viewed",
        file_id=str(notes),
        viewed="1",
        then=f"files/{notes}",
    )
    assert ticked.status_code == 302 and ticked.headers["Location"].endswith(f"files/{notes}")
    assert 'id="viewed-state">✓ Viewed' in file_page("olivia")
    assert 'data-viewed="yes"' in request_page("olivia")
    assert 'id="viewed-state">Not viewed yet' in file_page("oscar")
    assert 'id="viewed-form"' not in file_page("alice")  # the author's preview: no tick
    refused = post(web_service, rid, "alice", action="viewed", file_id=str(notes), viewed="1")
    assert refused.status_code == 403
    assert viewed(service, olivia, rid) == {"notes.txt": True}
