"""Tests for egress.domain.policy: who may do what, in which state.

The core is a permission table written out by hand (OpenSAFELY Airlock style): every role x
every request state x every permission, with the expected outcome. It is deliberately not
computed: when a rule changes, this table must be edited too, and the diff shows exactly which
(role, state, permission) cells moved.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from egress.domain import policy
from egress.domain.policy import (
    WORKFLOW_ACTIONS,
    Actor,
    Decision,
    Permission,
    PermissionDenied,
    RequestView,
    allowed_permissions,
    check,
    check_create,
    require,
)
from egress.domain.workflow import (
    INDEPENDENT_REVIEW_STATES,
    Action,
    FileDecision,
    RequestDecision,
    RequestState,
    Vote,
    allowed_actions,
    next_state,
    votes_after_file_change,
    votes_after_resubmit,
)
from tests.hypothesis_budget import examples

S = RequestState
P = Permission
#: Permissions that change nothing and take nothing out of the enclave.
READ_ONLY_PERMISSIONS = frozenset(
    {
        P.VIEW_REQUEST,
        P.VIEW_FILE,
        P.VIEW_PREVIEW,
        P.VIEW_PRIVATE_COMMENTS,
        P.VIEW_VOTES_OF_OTHERS,
        P.VIEW_AUDIT,
    }
)
AP, RC, UN = Vote.APPROVE, Vote.REQUEST_CHANGES, Vote.UNDECIDED

# --- The cast ----------------------------------------------------------------------------
#
# Project p1. alice is the author. carol and dave are the checkers who review in the table's
# requests (carol submits first, dave second), erin is another checker.
#
#   author    alice, member of p1, researcher
#   auth_chk  alice, member of p1, and an output checker (the author who is a checker)
#   member    bob, another member of p1
#   outsider  olga, a researcher of project p2 only
#   checker   erin, an output checker who is no member of p1 and has not submitted a review
#   reviewed  carol, an output checker who already submitted her review of the current round
#             (in draft and submitted no review is in yet: there she is an ordinary checker)
#   admin     adam, an administrator, neither member of p1 nor checker

ROLES = {
    "author": Actor("alice", frozenset({"p1"}), is_checker=False),
    "auth_chk": Actor("alice", frozenset({"p1"}), is_checker=True),
    "member": Actor("bob", frozenset({"p1"}), is_checker=False),
    "outsider": Actor("olga", frozenset({"p2"}), is_checker=False),
    "checker": Actor("erin", frozenset(), is_checker=True),
    "reviewed": Actor("carol", frozenset(), is_checker=True),
    "admin": Actor("adam", frozenset(), is_checker=False, is_admin=True),
}

FILES = ("table1.csv", "figure1.png")


def votes_of(**by_reviewer: Vote) -> dict[str, dict[str, Vote]]:
    """Every file gets the same votes: reviewer -> vote."""
    return {f: dict(by_reviewer) for f in FILES}


# One request per state, with facts consistent with that state, and set up so that the
# "happy" conditions hold (files present, context filled in, votes complete and approving):
# the table is about roles and states; the conditions have their own tests further down.
REQUESTS = {
    S.DRAFT: RequestView("r1", "p1", "alice", S.DRAFT, files={f: {} for f in FILES}),
    S.SUBMITTED: RequestView(
        "r1", "p1", "alice", S.SUBMITTED, files=votes_of(carol=AP, erin=AP)
    ),  # carol and erin have voted on everything, neither has submitted yet
    S.UNDER_REVIEW: RequestView(
        "r1",
        "p1",
        "alice",
        S.UNDER_REVIEW,
        reviewers_who_submitted=frozenset({"carol"}),
        files=votes_of(carol=AP, erin=AP),
    ),
    **{
        state: RequestView(
            "r1",
            "p1",
            "alice",
            state,
            reviewers_who_submitted=frozenset({"carol", "dave"}),
            files=votes_of(carol=AP, dave=AP),
        )
        for state in (S.REVIEWED, S.RETURNED, S.APPROVED, S.RELEASED, S.REJECTED, S.REVOKED)
    },
    S.WITHDRAWN: RequestView(
        "r1",
        "p1",
        "alice",
        S.WITHDRAWN,
        reviewers_who_submitted=frozenset({"carol"}),
        files=votes_of(carol=AP),
        submitted=True,
    ),  # withdrawn half-way through the review (before submission: see its own test)
}

# --- The table ---------------------------------------------------------------------------
#
# ok  = allowed
# 403 = refused: this role may never do this on this request
# 409 = refused: not in this state / round
#
# CREATE is about a project, not a request: see CREATE_TABLE below.

TABLE = """
[view_request]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        ok      403       403      403       403
submitted     ok      ok        ok      403       ok       ok        ok
under_review  ok      ok        ok      403       ok       ok        ok
reviewed      ok      ok        ok      403       ok       ok        ok
returned      ok      ok        ok      403       ok       ok        ok
approved      ok      ok        ok      403       ok       ok        ok
released      ok      ok        ok      403       ok       ok        ok
rejected      ok      ok        ok      403       ok       ok        ok
withdrawn     ok      ok        ok      403       ok       ok        ok
revoked       ok      ok        ok      403       ok       ok        ok

[view_file]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       ok       ok        403
under_review  403     403       403     403       ok       ok        403
reviewed      403     403       403     403       ok       ok        403
returned      403     403       403     403       ok       ok        403
approved      403     403       403     403       ok       ok        403
released      403     403       403     403       ok       ok        403
rejected      403     403       403     403       ok       ok        403
withdrawn     403     403       403     403       ok       ok        403
revoked       403     403       403     403       ok       ok        403

[view_preview]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        ok      403       403      403       403
submitted     ok      ok        ok      403       ok       ok        403
under_review  ok      ok        ok      403       ok       ok        403
reviewed      ok      ok        ok      403       ok       ok        403
returned      ok      ok        ok      403       ok       ok        403
approved      ok      ok        ok      403       ok       ok        403
released      ok      ok        ok      403       ok       ok        403
rejected      ok      ok        ok      403       ok       ok        403
withdrawn     ok      ok        ok      403       ok       ok        403
revoked       ok      ok        ok      403       ok       ok        403

[add_file]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        403     403       403      403       403
submitted     409     409       403     403       403      403       403
under_review  409     409       403     403       403      403       403
reviewed      409     409       403     403       403      403       403
returned      ok      ok        403     403       403      403       403
approved      409     409       403     403       403      403       403
released      409     409       403     403       403      403       403
rejected      409     409       403     403       403      403       403
withdrawn     409     409       403     403       403      403       403
revoked       409     409       403     403       403      403       403

[remove_file]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        403     403       403      403       403
submitted     409     409       403     403       403      403       403
under_review  409     409       403     403       403      403       403
reviewed      409     409       403     403       403      403       403
returned      ok      ok        403     403       403      403       403
approved      409     409       403     403       403      403       403
released      409     409       403     403       403      403       403
rejected      409     409       403     403       403      403       403
withdrawn     409     409       403     403       403      403       403
revoked       409     409       403     403       403      403       403

[edit_context]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        403     403       403      403       403
submitted     409     409       403     403       403      403       403
under_review  409     409       403     403       403      403       403
reviewed      409     409       403     403       403      403       403
returned      ok      ok        403     403       403      403       403
approved      409     409       403     403       403      403       403
released      409     409       403     403       403      403       403
rejected      409     409       403     403       403      403       403
withdrawn     409     409       403     403       403      403       403
revoked       409     409       403     403       403      403       403

[submit]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        403     403       403      403       403
submitted     409     409       403     403       403      403       403
under_review  409     409       403     403       403      403       403
reviewed      409     409       403     403       403      403       403
returned      ok      ok        403     403       403      403       403
approved      409     409       403     403       403      403       403
released      409     409       403     403       403      403       403
rejected      409     409       403     403       403      403       403
withdrawn     409     409       403     403       403      403       403
revoked       409     409       403     403       403      403       403

[withdraw]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        403     403       403      403       403
submitted     ok      ok        403     403       403      403       403
under_review  ok      ok        403     403       403      403       403
reviewed      ok      ok        403     403       403      403       403
returned      ok      ok        403     403       403      403       403
approved      409     409       403     403       403      403       403
released      409     409       403     403       403      403       403
rejected      409     409       403     403       403      403       403
withdrawn     409     409       403     403       403      403       403
revoked       409     409       403     403       403      403       403

[vote]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       ok       ok        403
under_review  403     403       403     403       ok       409       403
reviewed      403     403       403     403       409      ok        403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       409      409       403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[reset_vote]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       ok       ok        403
under_review  403     403       403     403       ok       409       403
reviewed      403     403       403     403       409      409       403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       409      409       403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[comment_public]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        ok      403       403      403       403
submitted     409     409       409     403       ok       ok        403
under_review  409     409       409     403       ok       409       403
reviewed      409     409       409     403       ok       ok        403
returned      ok      ok        ok      403       409      409       403
approved      409     409       409     403       409      409       403
released      409     409       409     403       409      409       403
rejected      409     409       409     403       409      409       403
withdrawn     409     409       409     403       409      409       403
revoked       409     409       409     403       409      409       403

[comment_private]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       ok       ok        403
under_review  403     403       403     403       ok       409       403
reviewed      403     403       403     403       ok       ok        403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       409      409       403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[view_private_comments]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       ok       ok        403
under_review  403     403       403     403       ok       ok        403
reviewed      403     403       403     403       ok       ok        403
returned      403     403       403     403       ok       ok        403
approved      403     403       403     403       ok       ok        403
released      403     403       403     403       ok       ok        403
rejected      403     403       403     403       ok       ok        403
withdrawn     403     403       403     403       ok       ok        403
revoked       403     403       403     403       ok       ok        403

[submit_review]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       ok       ok        403
under_review  403     403       403     403       ok       409       403
reviewed      403     403       403     403       409      409       403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       409      409       403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[return]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       409      409       403
under_review  403     403       403     403       409      409       403
reviewed      403     403       403     403       ok       ok        403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       409      409       403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[approve]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       409      409       403
under_review  403     403       403     403       409      409       403
reviewed      403     403       403     403       ok       ok        403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       409      409       403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[reject]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       409      409       403
under_review  403     403       403     403       409      409       403
reviewed      403     403       403     403       ok       ok        403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       409      409       403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[release]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       409      409       403
under_review  403     403       403     403       409      409       403
reviewed      403     403       403     403       409      409       403
returned      403     403       403     403       409      409       403
approved      403     403       403     403       ok       ok        403
released      403     403       403     403       409      409       403
rejected      403     403       403     403       409      409       403
withdrawn     403     403       403     403       409      409       403
revoked       403     403       403     403       409      409       403

[download_released]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         409     409       409     403       403      403       403
submitted     409     409       409     403       403      403       403
under_review  409     409       409     403       403      403       403
reviewed      409     409       409     403       403      403       403
returned      409     409       409     403       403      403       403
approved      409     409       409     403       403      403       403
released      ok      ok        ok      403       403      403       403
rejected      409     409       409     403       403      403       403
withdrawn     409     409       409     403       403      403       403
revoked       409     409       409     403       403      403       403

[revoke]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       409      409       409
under_review  403     403       403     403       409      409       409
reviewed      403     403       403     403       409      409       409
returned      403     403       403     403       409      409       409
approved      403     403       403     403       409      409       409
released      403     403       403     403       ok       ok        ok
rejected      403     403       403     403       409      409       409
withdrawn     403     403       403     403       409      409       409
revoked       403     403       403     403       409      409       409

[view_votes_of_others]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        ok      403       403      403       403
submitted     409     409       409     403       409      409       409
under_review  409     409       409     403       409      409       409
reviewed      409     409       409     403       ok       ok        409
returned      ok      ok        ok      403       ok       ok        ok
approved      ok      ok        ok      403       ok       ok        ok
released      ok      ok        ok      403       ok       ok        ok
rejected      ok      ok        ok      403       ok       ok        ok
withdrawn     ok      ok        ok      403       ok       ok        ok
revoked       ok      ok        ok      403       ok       ok        ok

[view_audit]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         403     403       403     403       403      403       403
submitted     403     403       403     403       409      409       ok
under_review  403     403       403     403       409      409       ok
reviewed      403     403       403     403       ok       ok        ok
returned      403     403       403     403       ok       ok        ok
approved      403     403       403     403       ok       ok        ok
released      403     403       403     403       ok       ok        ok
rejected      403     403       403     403       ok       ok        ok
withdrawn     403     403       403     403       ok       ok        ok
revoked       403     403       403     403       ok       ok        ok

[reexecute]
state         author  auth_chk  member  outsider  checker  reviewed  admin
draft         ok      ok        403     403       403      403       403
submitted     ok      ok        403     403       ok       ok        403
under_review  409     409       403     403       ok       ok        403
reviewed      409     409       403     403       ok       ok        403
returned      ok      ok        403     403       409      409       403
approved      409     409       403     403       409      409       403
released      409     409       403     403       409      409       403
rejected      409     409       403     403       409      409       403
withdrawn     409     409       403     403       409      409       403
revoked       409     409       403     403       409      409       403
"""

CREATE_TABLE = """
role      outcome
author    ok
auth_chk  ok
member    ok
outsider  403
checker   403
reviewed  403
admin     403
"""

OUTCOME_STATUS = {"ok": 200, "403": 403, "409": 409}


def parse_table(text: str) -> dict[tuple[Permission, RequestState, str], str]:
    """The table above as {(permission, state, role): outcome}; fails on any malformed line."""
    rows: dict[tuple[Permission, RequestState, str], str] = {}
    permission = None
    roles: list[str] = []
    for line in text.strip().splitlines():
        words = line.split()
        if not words:
            continue
        if line.startswith("["):
            permission, roles = Permission(line.strip("[]")), []
        elif words[0] == "state":
            roles = words[1:]
            assert roles == list(ROLES), f"columns must be {list(ROLES)}: {line!r}"
        else:
            state = RequestState(words[0])
            assert len(words) == 1 + len(roles), f"wrong number of cells: {line!r}"
            for role, outcome in zip(roles, words[1:], strict=True):
                assert outcome in OUTCOME_STATUS, f"unknown outcome {outcome!r}: {line!r}"
                key = (permission, state, role)
                assert key not in rows, f"duplicate cell {key}"
                rows[key] = outcome
    return rows


EXPECTED = parse_table(TABLE)


def test_table_covers_every_permission_state_and_role_exactly_once():
    request_permissions = [p for p in Permission if p is not P.CREATE]
    assert set(EXPECTED) == {
        (p, s, r) for p in request_permissions for s in RequestState for r in ROLES
    }
    assert len(EXPECTED) == 23 * 10 * 7 == 1610


@pytest.mark.parametrize(
    ("permission", "state", "role"),
    sorted(EXPECTED),
    ids=[f"{p}-{s}-{r}" for p, s, r in sorted(EXPECTED)],
)
def test_permission_table(permission, state, role):
    decision = check(ROLES[role], permission, REQUESTS[state])
    expected = EXPECTED[(permission, state, role)]
    assert decision.status == OUTCOME_STATUS[expected], decision.reason
    assert decision.allowed == (expected == "ok")
    if decision.allowed:
        assert decision.reason == ""
    else:
        # A refusal is a sentence for a person, not a code.
        assert decision.reason[0].isupper() and decision.reason.endswith("."), decision.reason
        assert "_" not in decision.reason.replace("view_votes_of_others", ""), decision.reason


def parse_create_table(text: str) -> dict[str, str]:
    lines = text.strip().splitlines()
    assert lines[0].split() == ["role", "outcome"]
    return dict(line.split() for line in lines[1:])


CREATE_EXPECTED = parse_create_table(CREATE_TABLE)


def test_create_table_covers_every_role():
    assert set(CREATE_EXPECTED) == set(ROLES)


@pytest.mark.parametrize("role", list(ROLES))
def test_create(role):
    expected = OUTCOME_STATUS[CREATE_EXPECTED[role]]
    assert check_create(ROLES[role], "p1").status == expected
    # Through the single entry point, a request describing the one about to be created:
    draft = RequestView("new", "p1", ROLES[role].username, S.DRAFT)
    assert check(ROLES[role], P.CREATE, draft).status == expected


def test_create_refusal_names_the_project():
    assert check_create(ROLES["outsider"], "p1").reason == (
        "Only members of project p1 can ask for releases from it."
    )


# --- Messages ----------------------------------------------------------------------------


def test_author_who_is_a_checker_gets_the_author_reason():
    decision = check(ROLES["auth_chk"], P.SUBMIT_REVIEW, REQUESTS[S.SUBMITTED])
    assert decision == Decision(
        False,
        "You are the author of this request; authors can't review their own request.",
        403,
    )
    decision = check(ROLES["auth_chk"], P.VOTE, REQUESTS[S.SUBMITTED])
    assert decision.reason == (
        "You are the author of this request; authors can't vote on their own request."
    )
    decision = check(ROLES["auth_chk"], P.RELEASE, REQUESTS[S.APPROVED])
    assert decision.reason == (
        "You are the author of this request; authors can't release their own request."
    )


def test_outsider_is_told_why():
    decision = check(ROLES["outsider"], P.VIEW_REQUEST, REQUESTS[S.SUBMITTED])
    assert decision.reason == (
        "You are not a member of project p1; only its members and output checkers can see its "
        "requests."
    )


def test_state_conflicts_name_the_state_and_the_states_that_would_work():
    decision = check(ROLES["author"], P.WITHDRAW, REQUESTS[S.APPROVED])
    assert decision.reason == (
        "This request is approved; only a request that is draft, submitted, under review, "
        "reviewed or returned can be withdrawn."
    )
    decision = check(ROLES["checker"], P.RELEASE, REQUESTS[S.REVIEWED])
    assert decision.reason == (
        "This request is reviewed; only a request that is approved can be released."
    )


def test_independence_is_explained():
    decision = check(ROLES["checker"], P.VIEW_VOTES_OF_OTHERS, REQUESTS[S.UNDER_REVIEW])
    assert decision.reason == (
        "Reviews are independent: other checkers' votes are shown once all 2 required reviews "
        "are in."
    )
    decision = check(ROLES["reviewed"], P.VOTE, REQUESTS[S.UNDER_REVIEW])
    assert decision.status == 409
    assert "already submitted your review" in decision.reason


def test_non_member_author_edit_refusal_names_the_author():
    decision = check(ROLES["member"], P.ADD_FILE, REQUESTS[S.DRAFT])
    assert decision.reason == "Only the author of this request (alice) can add files to it."


# --- require() ---------------------------------------------------------------------------


def test_require_passes_silently_when_allowed():
    assert require(ROLES["author"], P.SUBMIT, REQUESTS[S.DRAFT]) is None


@pytest.mark.parametrize(
    ("role", "permission", "state", "status"),
    [
        ("auth_chk", P.APPROVE, S.REVIEWED, 403),
        ("checker", P.APPROVE, S.UNDER_REVIEW, 409),
        ("outsider", P.VIEW_FILE, S.RELEASED, 403),
        ("author", P.DOWNLOAD_RELEASED, S.APPROVED, 409),
    ],
)
def test_require_raises_with_reason_and_status(role, permission, state, status):
    with pytest.raises(PermissionDenied) as raised:
        require(ROLES[role], permission, REQUESTS[state])
    decision = check(ROLES[role], permission, REQUESTS[state])
    assert raised.value.status == status
    assert raised.value.reason == decision.reason == str(raised.value)


def test_allowed_permissions_lists_what_check_allows():
    assert allowed_permissions(ROLES["author"], REQUESTS[S.RELEASED]) == {
        P.VIEW_REQUEST,
        P.VIEW_PREVIEW,
        P.CREATE,
        P.DOWNLOAD_RELEASED,
        P.VIEW_VOTES_OF_OTHERS,
    }
    assert allowed_permissions(ROLES["reviewed"], REQUESTS[S.UNDER_REVIEW]) == {
        P.VIEW_REQUEST,
        P.VIEW_FILE,
        P.VIEW_PREVIEW,
        P.VIEW_PRIVATE_COMMENTS,
        P.REEXECUTE,
    }


# --- Issue #12: no unreviewed byte to a member; checkers see only submitted requests ----

UNSUBMITTED = {
    "draft": REQUESTS[S.DRAFT],
    "withdrawn before submission": RequestView(
        "r1", "p1", "alice", S.WITHDRAWN, files={f: {} for f in FILES}, submitted=False
    ),
}
MEMBER_CHECKER = Actor("amy", frozenset({"p1"}), is_checker=True)  # a member, not the author


@pytest.mark.parametrize("request_name", list(UNSUBMITTED))
@pytest.mark.parametrize("role", ["checker", "reviewed", "admin"])
@pytest.mark.parametrize("permission", [p for p in Permission if p is not P.CREATE])
def test_non_members_see_nothing_of_a_request_never_submitted(request_name, role, permission):
    decision = check(ROLES[role], permission, UNSUBMITTED[request_name])
    assert decision.status == 403
    assert "has not been submitted" in decision.reason


@pytest.mark.parametrize("request_name", list(UNSUBMITTED))
def test_a_checker_who_is_a_member_sees_no_bytes_before_submission(request_name):
    request = UNSUBMITTED[request_name]
    assert check(MEMBER_CHECKER, P.VIEW_REQUEST, request).allowed
    assert check(MEMBER_CHECKER, P.VIEW_PREVIEW, request).allowed
    decision = check(MEMBER_CHECKER, P.VIEW_FILE, request)
    assert (decision.status, "has not been submitted yet" in decision.reason) == (409, True)
    submitted = dataclasses.replace(request, state=S.SUBMITTED, submitted=True)
    assert check(MEMBER_CHECKER, P.VIEW_FILE, submitted).allowed  # positive control


@pytest.mark.parametrize("state", list(RequestState))
@pytest.mark.parametrize("role", ["author", "auth_chk", "member"])
def test_members_never_get_the_bytes_of_a_file_only_a_preview(state, role):
    request = dataclasses.replace(REQUESTS[state], submitted=True)
    decision = check(ROLES[role], P.VIEW_FILE, request)
    assert decision.status == 403
    words = "authors the contents" if role != "member" else "Only output checkers see"
    assert all(w in decision.reason for w in words.split()), decision.reason
    assert check(ROLES[role], P.VIEW_PREVIEW, request).allowed
    # the one way out for a member is the release download
    assert check(ROLES[role], P.DOWNLOAD_RELEASED, request).allowed == (state is S.RELEASED)


def test_submitted_defaults_from_the_state_and_withdrawn_is_read_as_never_submitted():
    assert not RequestView("r", "p1", "alice", S.DRAFT).submitted
    assert not RequestView("r", "p1", "alice", S.WITHDRAWN).submitted
    assert RequestView("r", "p1", "alice", S.WITHDRAWN, submitted=True).submitted
    assert all(
        RequestView("r", "p1", "alice", s).submitted
        for s in RequestState
        if s not in (S.DRAFT, S.WITHDRAWN)
    )


# --- Conditions beyond role and state ----------------------------------------------------


def test_submit_needs_files():
    empty = dataclasses.replace(REQUESTS[S.DRAFT], files={})
    decision = check(ROLES["author"], P.SUBMIT, empty)
    assert (decision.status, decision.reason) == (
        409,
        "Add at least one file before submitting this request.",
    )


def test_submit_needs_context_and_controls_for_every_group():
    missing = dataclasses.replace(
        REQUESTS[S.RETURNED], groups_missing_context=frozenset({"tables", "figures"})
    )
    decision = check(ROLES["author"], P.SUBMIT, missing)
    assert decision.status == 409
    assert decision.reason.endswith("still missing for: figures, tables.")


def test_submit_review_needs_a_vote_on_every_file():
    request = dataclasses.replace(
        REQUESTS[S.SUBMITTED],
        files={"a.csv": {"erin": AP}, "b.csv": {"erin": UN}, "c.csv": {}},
    )
    decision = check(ROLES["checker"], P.SUBMIT_REVIEW, request)
    assert decision.status == 409
    assert decision.reason == (
        "Vote on every file before submitting your review; still undecided: b.csv, c.csv."
    )


def test_long_lists_are_shortened():
    files = {f"f{i:02}.csv": {} for i in range(12)}
    request = dataclasses.replace(REQUESTS[S.SUBMITTED], files=files)
    decision = check(ROLES["checker"], P.SUBMIT_REVIEW, request)
    assert decision.reason.endswith("f00.csv, f01.csv, f02.csv, f03.csv, f04.csv and 7 more.")


def test_submit_review_on_a_request_without_files_is_refused():
    request = dataclasses.replace(REQUESTS[S.SUBMITTED], files={})
    assert check(ROLES["checker"], P.SUBMIT_REVIEW, request).status == 409


def test_a_second_review_in_the_same_round_is_refused():
    decision = check(ROLES["reviewed"], P.SUBMIT_REVIEW, REQUESTS[S.UNDER_REVIEW])
    assert (decision.status, decision.reason) == (
        409,
        "You have already submitted your review for this round.",
    )


def test_no_review_once_all_required_reviews_are_in():
    decision = check(ROLES["checker"], P.SUBMIT_REVIEW, REQUESTS[S.REVIEWED])
    assert (decision.status, decision.reason) == (
        409,
        "No more reviews are needed: all 2 required reviews are in.",
    )


@pytest.mark.parametrize(
    ("carol", "dave", "decision"),
    [
        (RC, RC, RequestDecision.CHANGES_REQUESTED),
        (AP, RC, RequestDecision.CONFLICTED),
    ],
)
def test_approve_needs_every_file_approved_by_every_required_reviewer(carol, dave, decision):
    files = {"table1.csv": {"carol": AP, "dave": AP}, "figure1.png": {"carol": carol, "dave": dave}}
    request = dataclasses.replace(REQUESTS[S.REVIEWED], files=files)
    assert request.decision() is decision
    refused = check(ROLES["checker"], P.APPROVE, request)
    assert refused.status == 409
    assert refused.reason == (
        f"Every file must be approved by all 2 required reviewers ({decision}); "
        "not approved: figure1.png."
    )
    # Returning and rejecting stay possible.
    assert check(ROLES["checker"], P.RETURN, request).allowed
    assert check(ROLES["checker"], P.REJECT, request).allowed


def test_approve_counts_only_submitted_reviewers():
    # erin voted approve but did not submit a review: only carol's submitted vote counts.
    request = RequestView(
        "r1",
        "p1",
        "alice",
        S.REVIEWED,
        reviews_required=2,
        reviewers_who_submitted=frozenset({"carol", "dave"}),
        files={"t.csv": {"carol": AP, "erin": AP, "dave": UN}},
    )
    assert request.file_decisions() == {"t.csv": FileDecision.INCOMPLETE}
    assert check(ROLES["reviewed"], P.APPROVE, request).status == 409


def test_the_authors_vote_never_counts():
    # Even if a corrupt record lists the author as a reviewer with a vote, it doesn't count.
    request = RequestView(
        "r1",
        "p1",
        "alice",
        S.REVIEWED,
        reviewers_who_submitted=frozenset({"alice", "carol"}),
        files={"t.csv": {"alice": AP, "carol": AP}},
    )
    assert request.counted_votes("t.csv") == {"carol": AP}
    assert check(ROLES["checker"], P.APPROVE, request).status == 409


def test_approve_of_a_request_without_files_is_refused():
    request = dataclasses.replace(REQUESTS[S.REVIEWED], files={})
    assert check(ROLES["checker"], P.APPROVE, request).status == 409


def test_reviews_required_is_per_request():
    three = dataclasses.replace(
        REQUESTS[S.REVIEWED],
        reviews_required=3,
        reviewers_who_submitted=frozenset({"carol", "dave", "frank"}),
        files=votes_of(carol=AP, dave=AP, frank=AP),
    )
    assert check(ROLES["checker"], P.APPROVE, three).allowed
    short = dataclasses.replace(three, files=votes_of(carol=AP, dave=AP, frank=UN))
    assert check(ROLES["checker"], P.APPROVE, short).status == 409
    one = RequestView(
        "r2",
        "p1",
        "alice",
        S.SUBMITTED,
        reviews_required=1,
        files=votes_of(erin=AP),
    )
    assert check(ROLES["checker"], P.SUBMIT_REVIEW, one).allowed
    one_in = dataclasses.replace(one, state=S.REVIEWED, reviewers_who_submitted={"erin"})
    assert check(ROLES["checker"], P.SUBMIT_REVIEW, one_in).reason == (
        "No more reviews are needed: the required review is in."
    )


def test_a_checker_who_is_a_member_but_not_the_author_reviews_and_comments_as_member():
    bob_checker = Actor("bob", frozenset({"p1"}), is_checker=True)
    assert check(bob_checker, P.VOTE, REQUESTS[S.SUBMITTED]).allowed
    assert check(bob_checker, P.COMMENT_PUBLIC, REQUESTS[S.SUBMITTED]).allowed
    assert check(bob_checker, P.COMMENT_PUBLIC, REQUESTS[S.RETURNED]).allowed
    assert check(bob_checker, P.DOWNLOAD_RELEASED, REQUESTS[S.RELEASED]).allowed
    decision = check(bob_checker, P.COMMENT_PUBLIC, REQUESTS[S.APPROVED])
    assert decision.status == 409


def test_an_author_who_left_the_project_loses_access():
    gone = Actor("alice", frozenset(), is_checker=False)
    assert check(gone, P.VIEW_REQUEST, REQUESTS[S.DRAFT]).status == 403
    gone_checker = Actor("alice", frozenset(), is_checker=True)
    assert check(gone_checker, P.VIEW_REQUEST, REQUESTS[S.SUBMITTED]).allowed
    # no longer a member: as any checker, they don't see a draft any more
    assert "has not been submitted" in check(gone_checker, P.VIEW_REQUEST, REQUESTS[S.DRAFT]).reason
    decision = check(gone_checker, P.ADD_FILE, REQUESTS[S.RETURNED])
    assert (decision.status, decision.reason) == (403, "You are no longer a member of project p1.")
    assert check(gone_checker, P.DOWNLOAD_RELEASED, REQUESTS[S.RELEASED]).status == 403
    assert check(gone_checker, P.VOTE, REQUESTS[S.SUBMITTED]).status == 403


def test_an_admin_who_is_a_checker_still_waits_for_independent_reviews():
    admin_checker = Actor("adam", frozenset(), is_checker=True, is_admin=True)
    assert check(admin_checker, P.VIEW_AUDIT, REQUESTS[S.UNDER_REVIEW]).status == 409
    assert check(admin_checker, P.VIEW_AUDIT, REQUESTS[S.REVIEWED]).allowed
    assert check(admin_checker, P.VIEW_FILE, REQUESTS[S.SUBMITTED]).allowed


def test_plain_values_are_accepted():
    actor = Actor("bob", ["p1"], is_checker=False)  # a list, as configuration gives it
    assert actor.projects == frozenset({"p1"})
    request = RequestView("r1", "p1", "alice", "returned", reviewers_who_submitted=["carol"])
    assert request.state is S.RETURNED
    assert request.reviewers_who_submitted == frozenset({"carol"})
    assert check(actor, "comment_public", request).allowed


def test_reviews_required_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        RequestView("r1", "p1", "alice", S.DRAFT, reviews_required=0)


def test_workflow_permissions_map_to_workflow_actions():
    assert {p.value for p in WORKFLOW_ACTIONS} == {a.value for a in Action}
    for permission, action in WORKFLOW_ACTIONS.items():
        assert permission.value == action.value


def test_policy_imports_only_the_standard_library_and_the_workflow():
    tree = ast.parse(Path(policy.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= {
        "__future__",
        "collections.abc",
        "dataclasses",
        "enum",
        "egress.domain.workflow",
    }


# --- Properties --------------------------------------------------------------------------

AUTHOR_NEVER = frozenset(
    {
        P.VOTE,
        P.RESET_VOTE,
        P.SUBMIT_REVIEW,
        P.RETURN,
        P.APPROVE,
        P.REJECT,
        P.RELEASE,
        P.REVOKE,
        P.COMMENT_PRIVATE,
        P.VIEW_PRIVATE_COMMENTS,
    }
)
"""What the author of a request may never do on it, whatever other roles they hold."""

USERNAMES = ("alice", "bob", "olga", "carol", "dave", "erin", "adam")

actors = st.builds(
    Actor,
    username=st.sampled_from(USERNAMES),
    projects=st.frozensets(st.sampled_from(("p1", "p2"))),
    is_checker=st.booleans(),
    is_admin=st.booleans(),
)

requests = st.builds(
    RequestView,
    id=st.just("r1"),
    project=st.just("p1"),
    author=st.sampled_from(USERNAMES),
    state=st.sampled_from(list(RequestState)),
    reviews_required=st.integers(min_value=1, max_value=3),
    reviewers_who_submitted=st.frozensets(st.sampled_from(USERNAMES), max_size=3),
    files=st.dictionaries(
        st.sampled_from(FILES),
        st.dictionaries(st.sampled_from(USERNAMES), st.sampled_from(list(Vote)), max_size=4),
        max_size=2,
    ),
    groups_missing_context=st.frozensets(st.sampled_from(("tables", "figures")), max_size=1),
)


@settings(max_examples=examples(500))
@given(actor=actors, request=requests)
def test_an_author_never_acts_as_checker_on_their_own_request(actor, request):
    request = dataclasses.replace(request, author=actor.username)
    for permission in AUTHOR_NEVER:
        assert not check(actor, permission, request).allowed, permission


@settings(max_examples=examples(500))
@given(actor=actors, request=requests)
def test_terminal_states_allow_only_reading_and_released_adds_download_and_revoke(actor, request):
    extra = {S.RELEASED: {P.DOWNLOAD_RELEASED, P.REVOKE}}
    for state in (S.REJECTED, S.WITHDRAWN, S.REVOKED, S.RELEASED):
        ended = dataclasses.replace(request, state=state)
        allowed = allowed_permissions(actor, ended) - {P.CREATE}
        assert allowed <= READ_ONLY_PERMISSIONS | extra.get(state, set()), (state, allowed)


@settings(max_examples=examples(500))
@given(actor=actors, request=requests, permission=st.sampled_from(list(Permission)))
def test_403_never_depends_on_the_state(actor, request, permission):
    statuses = {
        state: check(actor, permission, dataclasses.replace(request, state=state)).status
        for state in RequestState
    }
    forbidden = {state for state, status in statuses.items() if status == 403}
    assert forbidden in (set(), set(RequestState)), statuses


@settings(max_examples=examples(500))
@given(actor=actors, request=requests)
def test_policy_never_allows_what_the_workflow_does_not(actor, request):
    for permission, action in WORKFLOW_ACTIONS.items():
        if check(actor, permission, request).allowed:
            assert action in allowed_actions(request.state)


@settings(max_examples=examples(300))
@given(actor=actors, request=requests)
def test_reviews_stay_independent(actor, request):
    if request.state in INDEPENDENT_REVIEW_STATES:
        assert not check(actor, P.VIEW_VOTES_OF_OTHERS, request).allowed or not actor.is_checker
        if actor.is_checker:
            assert not check(actor, P.VIEW_AUDIT, request).allowed


# A simulated service: random sequences of *allowed* actions by a random cast.

STATE_CHANGING = (
    P.ADD_FILE,
    P.REMOVE_FILE,
    P.SUBMIT,
    P.WITHDRAW,
    P.VOTE,
    P.RESET_VOTE,
    P.SUBMIT_REVIEW,
    P.RETURN,
    P.APPROVE,
    P.REJECT,
    P.RELEASE,
    P.REVOKE,
)


def apply(request: RequestView, actor: Actor, permission: Permission, data) -> RequestView:
    """What the service would store after ``permission`` was allowed and performed."""
    files = {f: dict(v) for f, v in request.files.items()}
    submitted = set(request.reviewers_who_submitted)
    state = request.state
    if permission is P.ADD_FILE:
        name = data.draw(st.sampled_from(("table1.csv", "figure1.png", "notes.txt")))
        # Adding a file that is already there replaces its content: its votes reset.
        files[name] = votes_after_file_change(files.get(name, {}))
    elif permission is P.REMOVE_FILE and files:
        del files[data.draw(st.sampled_from(sorted(files)))]
    elif permission is P.VOTE and files:
        name = data.draw(st.sampled_from(sorted(files)))
        files[name][actor.username] = data.draw(st.sampled_from((AP, AP, AP, RC)))
    elif permission is P.RESET_VOTE:
        for votes in files.values():
            if actor.username in votes:
                votes[actor.username] = UN
    elif permission is P.SUBMIT_REVIEW:
        submitted.add(actor.username)
        state = next_state(
            state,
            Action.SUBMIT_REVIEW,
            reviews_in=len(submitted),
            reviews_required=request.reviews_required,
        )
    elif permission in WORKFLOW_ACTIONS:
        if permission is P.SUBMIT and state is S.RETURNED:
            files = {f: votes_after_resubmit(v) for f, v in files.items()}
            submitted = set()
        state = next_state(state, WORKFLOW_ACTIONS[permission])
    return dataclasses.replace(
        request,
        state=state,
        files=files,
        reviewers_who_submitted=frozenset(submitted),
        submitted=request.submitted or permission is P.SUBMIT,  # as the service records it
    )


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    alice_is_checker=st.booleans(),
    bob_is_checker=st.booleans(),
    reviews_required=st.integers(min_value=1, max_value=3),
    steps=st.integers(min_value=1, max_value=60),
)
def test_no_sequence_of_allowed_actions_lets_the_author_review_or_skips_approval(
    data, alice_is_checker, bob_is_checker, reviews_required, steps
):
    cast = [
        Actor("alice", frozenset({"p1"}), is_checker=alice_is_checker),
        Actor("bob", frozenset({"p1"}), is_checker=bob_is_checker),
        Actor("olga", frozenset({"p2"}), is_checker=False),
        Actor("carol", frozenset(), is_checker=True),
        Actor("dave", frozenset(), is_checker=True),
        Actor("erin", frozenset(), is_checker=True),
        Actor("adam", frozenset(), is_checker=False, is_admin=True),
    ]
    alice = cast[0]
    request = RequestView(
        "r1",
        "p1",
        "alice",
        S.DRAFT,
        reviews_required=reviews_required,
        files={"table1.csv": {}},
    )
    history = [request.state]
    for _ in range(steps):
        for permission in AUTHOR_NEVER:
            assert not check(alice, permission, request).allowed
        moves = [
            (actor, permission)
            for actor in cast
            for permission in STATE_CHANGING
            if check(actor, permission, request).allowed
        ]
        if not moves:
            break
        # Ending moves (withdraw, reject) are drawn rarely, so that walks go deep.
        going_on = [(a, p) for a, p in moves if p not in (P.WITHDRAW, P.REJECT)]
        if going_on and data.draw(st.integers(min_value=0, max_value=19)):
            moves = going_on
        actor, permission = data.draw(st.sampled_from(moves))
        if permission is P.APPROVE:
            # What approval means: enough submitted reviewers, none the author, all approve.
            assert "alice" not in request.reviewers_who_submitted
            assert len(request.reviewers_who_submitted) >= reviews_required
            for file_id in request.files:
                approvals = [v for v in request.counted_votes(file_id).values() if v is AP]
                assert len(approvals) >= reviews_required
        request = apply(request, actor, permission, data)
        history.append(request.state)
        assert all("alice" not in votes for votes in request.files.values())
        assert "alice" not in request.reviewers_who_submitted
    event(f"reached released: {S.RELEASED in history}")
    event(f"reached returned: {S.RETURNED in history}")
    for before, after in zip(history, history[1:], strict=False):
        if after is S.RELEASED and before is not S.RELEASED:
            assert before is S.APPROVED
        if after is S.APPROVED and before is not S.APPROVED:
            assert before is S.REVIEWED


def test_a_whole_release_happens_with_two_independent_checkers():
    alice = Actor("alice", frozenset({"p1"}), is_checker=True)  # a checker, but the author
    carol, dave = ROLES["reviewed"], Actor("dave", frozenset(), is_checker=True)
    request = RequestView("r1", "p1", "alice", S.DRAFT, files={"t.csv": {}})

    def do(actor, permission, **changes):
        nonlocal request
        require(actor, permission, request)
        request = dataclasses.replace(request, **changes)

    do(alice, P.SUBMIT, state=S.SUBMITTED, submitted=True)
    assert check(alice, P.VOTE, request).status == 403
    do(carol, P.VOTE, files={"t.csv": {"carol": AP}})
    do(dave, P.VOTE, files={"t.csv": {"carol": AP, "dave": AP}})
    do(carol, P.SUBMIT_REVIEW, state=S.UNDER_REVIEW, reviewers_who_submitted={"carol"})
    assert check(carol, P.VIEW_VOTES_OF_OTHERS, request).status == 409
    do(dave, P.SUBMIT_REVIEW, state=S.REVIEWED, reviewers_who_submitted={"carol", "dave"})
    assert check(carol, P.VIEW_VOTES_OF_OTHERS, request).allowed
    assert check(alice, P.APPROVE, request).status == 403
    do(dave, P.APPROVE, state=S.APPROVED)
    assert check(alice, P.DOWNLOAD_RELEASED, request).status == 409
    assert check(alice, P.RELEASE, request).status == 403
    do(carol, P.RELEASE, state=S.RELEASED)
    do(alice, P.DOWNLOAD_RELEASED)
    do(ROLES["admin"], P.REVOKE, state=S.REVOKED)
    assert check(alice, P.DOWNLOAD_RELEASED, request).reason == (
        "This release was revoked; its files can no longer be downloaded."
    )
