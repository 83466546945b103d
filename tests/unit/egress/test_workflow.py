"""Tests for egress.domain.workflow: request states, transitions, whose turn, file votes, the doc
page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egress.domain import workflow
from egress.domain.workflow import (
    EDGES,
    TRANSITIONS,
    Action,
    FileDecision,
    InvalidTransition,
    Party,
    RequestDecision,
    RequestState,
    Vote,
    allowed_actions,
    file_decision,
    is_terminal,
    mermaid_diagram,
    next_state,
    request_decision,
    turn_of,
    votes_after_file_change,
    votes_after_resubmit,
)
from tests.hypothesis_budget import examples
from tests.unit.source_imports import imported_packages

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "egress" / "request-states.md"

S = RequestState
A = Action

# The whole fixed-target table, written out by hand (submit_review is tested separately).
EXPECTED_TRANSITIONS = {
    (S.DRAFT, A.SUBMIT): S.SUBMITTED,
    (S.DRAFT, A.WITHDRAW): S.WITHDRAWN,
    (S.SUBMITTED, A.WITHDRAW): S.WITHDRAWN,
    (S.UNDER_REVIEW, A.WITHDRAW): S.WITHDRAWN,
    (S.REVIEWED, A.APPROVE): S.APPROVED,
    (S.REVIEWED, A.RETURN): S.RETURNED,
    (S.REVIEWED, A.REJECT): S.REJECTED,
    (S.REVIEWED, A.WITHDRAW): S.WITHDRAWN,
    (S.RETURNED, A.SUBMIT): S.SUBMITTED,
    (S.RETURNED, A.WITHDRAW): S.WITHDRAWN,
    (S.APPROVED, A.RELEASE): S.RELEASED,
    (S.RELEASED, A.REVOKE): S.REVOKED,
}

EXPECTED_ALLOWED = {
    S.DRAFT: {A.SUBMIT, A.WITHDRAW},
    S.SUBMITTED: {A.SUBMIT_REVIEW, A.WITHDRAW},
    S.UNDER_REVIEW: {A.SUBMIT_REVIEW, A.WITHDRAW},
    S.REVIEWED: {A.APPROVE, A.RETURN, A.REJECT, A.WITHDRAW},
    S.RETURNED: {A.SUBMIT, A.WITHDRAW},
    S.APPROVED: {A.RELEASE},
    S.RELEASED: {A.REVOKE},
    S.REJECTED: set(),
    S.WITHDRAWN: set(),
    S.REVOKED: set(),
}

EXPECTED_TURN = {
    S.DRAFT: Party.AUTHOR,
    S.SUBMITTED: Party.CHECKERS,
    S.UNDER_REVIEW: Party.CHECKERS,
    S.REVIEWED: Party.CHECKERS,
    S.RETURNED: Party.AUTHOR,
    S.APPROVED: Party.CHECKERS,
    S.RELEASED: Party.NOBODY,
    S.REJECTED: Party.NOBODY,
    S.WITHDRAWN: Party.NOBODY,
    S.REVOKED: Party.NOBODY,
}


def test_state_and_action_values_are_stable_strings():
    # These strings end up in the database and the audit log: changing one is a migration.
    assert [s.value for s in RequestState] == [
        "draft",
        "submitted",
        "under_review",
        "reviewed",
        "returned",
        "approved",
        "released",
        "rejected",
        "withdrawn",
        "revoked",
    ]
    assert {a.value for a in Action} == {
        "submit",
        "submit_review",
        "approve",
        "return",
        "reject",
        "release",
        "revoke",
        "withdraw",
    }
    assert RequestState("under_review") is S.UNDER_REVIEW
    assert f"{S.UNDER_REVIEW}" == "under_review"


def test_transition_table_is_exactly_the_documented_one():
    assert dict(TRANSITIONS) == EXPECTED_TRANSITIONS


@pytest.mark.parametrize(("source", "action"), sorted(EXPECTED_TRANSITIONS))
def test_next_state_follows_the_table(source, action):
    assert next_state(source, action) is EXPECTED_TRANSITIONS[(source, action)]


@pytest.mark.parametrize("state", list(RequestState))
def test_allowed_actions(state):
    assert allowed_actions(state) == frozenset(EXPECTED_ALLOWED[state])


@pytest.mark.parametrize("state", list(RequestState))
def test_turn_of(state):
    assert turn_of(state) is EXPECTED_TURN[state]


def test_terminal_states():
    assert {s for s in RequestState if is_terminal(s)} == {S.REJECTED, S.WITHDRAWN, S.REVOKED}
    # Released is final for the workflow except for revoke.
    assert not is_terminal(S.RELEASED)
    assert allowed_actions(S.RELEASED) == {A.REVOKE}


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (s, a)
        for s in RequestState
        for a in Action
        if a not in EXPECTED_ALLOWED[s]  # every pair the table leaves out
    ],
)
def test_everything_else_is_an_invalid_transition(state, action):
    with pytest.raises(InvalidTransition) as raised:
        next_state(state, action, reviews_in=1, reviews_required=2)
    error = raised.value
    assert isinstance(error, ValueError)
    assert error.state is state and error.action is action
    assert error.allowed == frozenset(EXPECTED_ALLOWED[state])
    message = str(error)
    assert str(state) in message and str(action) in message
    for allowed in EXPECTED_ALLOWED[state]:
        assert str(allowed) in message
    if not EXPECTED_ALLOWED[state]:
        assert "final" in message


def test_invalid_transition_message_reads_well():
    with pytest.raises(InvalidTransition) as raised:
        next_state(S.APPROVED, A.WITHDRAW)
    assert str(raised.value) == (
        "Can't withdraw a request that is approved; allowed in state approved: release."
    )
    with pytest.raises(InvalidTransition) as raised:
        next_state(S.REJECTED, A.APPROVE)
    assert str(raised.value) == (
        "Can't approve a request that is rejected; no action is allowed in state rejected: "
        "it is final."
    )


@pytest.mark.parametrize(
    ("state", "reviews_in", "reviews_required", "expected"),
    [
        (S.SUBMITTED, 1, 2, S.UNDER_REVIEW),
        (S.UNDER_REVIEW, 2, 2, S.REVIEWED),
        (S.SUBMITTED, 1, 1, S.REVIEWED),  # a project requiring a single review
        (S.SUBMITTED, 1, 3, S.UNDER_REVIEW),
        (S.UNDER_REVIEW, 2, 3, S.UNDER_REVIEW),
        (S.UNDER_REVIEW, 3, 3, S.REVIEWED),
    ],
)
def test_submit_review_target_depends_on_reviews_in(state, reviews_in, reviews_required, expected):
    assert (
        next_state(state, A.SUBMIT_REVIEW, reviews_in=reviews_in, reviews_required=reviews_required)
        is expected
    )


def test_submit_review_defaults_to_two_required_reviews():
    assert workflow.DEFAULT_REVIEWS_REQUIRED == 2
    assert next_state(S.SUBMITTED, A.SUBMIT_REVIEW, reviews_in=1) is S.UNDER_REVIEW
    assert next_state(S.UNDER_REVIEW, A.SUBMIT_REVIEW, reviews_in=2) is S.REVIEWED


@pytest.mark.parametrize(
    ("state", "reviews_in", "reviews_required", "message"),
    [
        (S.SUBMITTED, None, 2, "needs reviews_in"),
        (S.SUBMITTED, 0, 2, "between 1 and reviews_required"),
        (S.UNDER_REVIEW, 3, 2, "between 1 and reviews_required"),
        (S.SUBMITTED, 2, 2, "this is review 1"),
        (S.UNDER_REVIEW, 1, 2, "already has a review in"),
        (S.UNDER_REVIEW, 2, 1, "between 1 and reviews_required"),
        (S.SUBMITTED, 1, 0, "at least 1"),
    ],
)
def test_submit_review_rejects_counts_that_contradict_the_state(
    state, reviews_in, reviews_required, message
):
    with pytest.raises(ValueError, match=message) as raised:
        next_state(state, A.SUBMIT_REVIEW, reviews_in=reviews_in, reviews_required=reviews_required)
    assert not isinstance(raised.value, InvalidTransition)


def test_submit_review_after_all_reviews_are_in_is_an_invalid_transition():
    with pytest.raises(InvalidTransition):
        next_state(S.REVIEWED, A.SUBMIT_REVIEW, reviews_in=2, reviews_required=2)


def test_next_state_accepts_plain_strings():
    assert next_state("draft", "submit") is S.SUBMITTED
    with pytest.raises(ValueError):
        next_state("draft", "teleport")


# --- The graph ---------------------------------------------------------------------------


def test_edges_are_the_table_plus_both_outcomes_of_submit_review():
    fixed = {(e.source, e.action, e.target) for e in EDGES if e.action is not A.SUBMIT_REVIEW}
    assert fixed == {(s, a, t) for (s, a), t in EXPECTED_TRANSITIONS.items()}
    review = {(e.source, e.target, e.condition) for e in EDGES if e.action is A.SUBMIT_REVIEW}
    assert review == {
        (S.SUBMITTED, S.UNDER_REVIEW, "more reviews needed"),
        (S.SUBMITTED, S.REVIEWED, "last required review"),
        (S.UNDER_REVIEW, S.UNDER_REVIEW, "more reviews needed"),
        (S.UNDER_REVIEW, S.REVIEWED, "last required review"),
    }


def test_every_state_is_reachable_from_draft():
    reached = {S.DRAFT}
    frontier = [S.DRAFT]
    while frontier:
        state = frontier.pop()
        for edge in EDGES:
            if edge.source == state and edge.target not in reached:
                reached.add(edge.target)
                frontier.append(edge.target)
    assert reached == set(RequestState)


def test_released_only_from_approved_and_approved_only_from_reviewed():
    assert {e.source for e in EDGES if e.target is S.RELEASED} == {S.APPROVED}
    assert {e.source for e in EDGES if e.target is S.APPROVED} == {S.REVIEWED}
    assert {e.source for e in EDGES if e.target is S.REVOKED} == {S.RELEASED}


def test_return_only_after_all_reviews_are_in():
    assert {e.source for e in EDGES if e.action is A.RETURN} == {S.REVIEWED}


def test_nothing_leaves_a_terminal_state():
    assert not [e for e in EDGES if is_terminal(e.source)]


@settings(max_examples=examples(300))
@given(
    reviews_required=st.integers(min_value=1, max_value=4),
    choices=st.lists(st.integers(min_value=0, max_value=100), max_size=40),
)
def test_random_walks_reach_released_only_through_approved(reviews_required, choices):
    state, reviews_in, path = S.DRAFT, 0, [S.DRAFT]
    for choice in choices:
        actions = sorted(allowed_actions(state))
        if not actions:
            break
        action = actions[choice % len(actions)]
        if action is A.SUBMIT_REVIEW:
            reviews_in += 1
        state = next_state(state, action, reviews_in=reviews_in, reviews_required=reviews_required)
        if action is A.SUBMIT:
            reviews_in = 0  # a new round
        path.append(state)
    for before, after in zip(path, path[1:], strict=False):
        if after is S.RELEASED:
            assert before is S.APPROVED
        if after is S.APPROVED:
            assert before is S.REVIEWED
        if before is S.REVIEWED and after is S.REVIEWED:
            pytest.fail("reviewed can't loop")
        assert not is_terminal(before)


# --- File votes --------------------------------------------------------------------------

AP, RC, UN = Vote.APPROVE, Vote.REQUEST_CHANGES, Vote.UNDECIDED


@pytest.mark.parametrize(
    ("votes", "required", "expected"),
    [
        ({}, 2, FileDecision.INCOMPLETE),
        ({"carol": AP}, 2, FileDecision.INCOMPLETE),
        ({"carol": RC}, 2, FileDecision.INCOMPLETE),
        ({"carol": AP, "dave": UN}, 2, FileDecision.INCOMPLETE),
        ({"carol": AP, "dave": AP}, 2, FileDecision.APPROVED),
        ({"carol": RC, "dave": RC}, 2, FileDecision.CHANGES_REQUESTED),
        ({"carol": AP, "dave": RC}, 2, FileDecision.CONFLICTED),
        ({"carol": AP}, 1, FileDecision.APPROVED),
        ({"carol": RC}, 1, FileDecision.CHANGES_REQUESTED),
        ({"carol": AP, "dave": AP, "erin": UN}, 2, FileDecision.APPROVED),
        ({"carol": AP, "dave": AP, "erin": RC}, 2, FileDecision.CONFLICTED),
        ({"carol": AP, "dave": AP}, 3, FileDecision.INCOMPLETE),
        ({"carol": UN, "dave": UN}, 2, FileDecision.INCOMPLETE),
    ],
)
def test_file_decision(votes, required, expected):
    assert file_decision(votes, required) is expected


def test_file_decision_defaults_to_two_reviews():
    assert file_decision({"carol": AP}) is FileDecision.INCOMPLETE
    assert file_decision({"carol": AP, "dave": AP}) is FileDecision.APPROVED


FD = FileDecision


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, RequestDecision.INCOMPLETE),
        ({"a": FD.APPROVED}, RequestDecision.APPROVABLE),
        ({"a": FD.APPROVED, "b": FD.APPROVED}, RequestDecision.APPROVABLE),
        ({"a": FD.APPROVED, "b": FD.CHANGES_REQUESTED}, RequestDecision.CHANGES_REQUESTED),
        ({"a": FD.APPROVED, "b": FD.CONFLICTED}, RequestDecision.CONFLICTED),
        ({"a": FD.CHANGES_REQUESTED, "b": FD.CONFLICTED}, RequestDecision.CONFLICTED),
        ({"a": FD.APPROVED, "b": FD.INCOMPLETE}, RequestDecision.INCOMPLETE),
        ({"a": FD.CONFLICTED, "b": FD.INCOMPLETE}, RequestDecision.INCOMPLETE),
    ],
)
def test_request_decision(files, expected):
    assert request_decision(files) is expected


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.sampled_from(list(FileDecision))))
def test_request_is_approvable_exactly_when_it_has_files_all_approved(files):
    approvable = request_decision(files) is RequestDecision.APPROVABLE
    assert approvable == (bool(files) and all(d is FD.APPROVED for d in files.values()))


def test_votes_after_file_change_makes_every_vote_undecided():
    votes = {"carol": AP, "dave": RC, "erin": UN}
    assert votes_after_file_change(votes) == {"carol": UN, "dave": UN, "erin": UN}
    assert votes == {"carol": AP, "dave": RC, "erin": UN}  # not modified in place
    assert file_decision(votes_after_file_change({"carol": AP, "dave": AP})) is FD.INCOMPLETE


def test_votes_after_resubmit_keeps_approvals_and_reopens_change_requests():
    votes = {"carol": AP, "dave": RC, "erin": UN}
    assert votes_after_resubmit(votes) == {"carol": AP, "dave": UN, "erin": UN}


# --- The generated document --------------------------------------------------------------


def test_mermaid_diagram_has_every_edge():
    diagram = mermaid_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    assert "    [*] --> draft\n" in diagram
    assert "    approved --> released: release\n" in diagram
    assert "    submitted --> reviewed: submit_review (last required review)\n" in diagram
    assert "    under_review --> under_review: submit_review (more reviews needed)\n" in diagram
    for state in (S.REJECTED, S.WITHDRAWN, S.REVOKED):
        assert f"    {state} --> [*]\n" in diagram
    assert diagram.count(" --> ") == len(EDGES) + 1 + 3


def test_markdown_document_has_a_row_per_state():
    document = workflow.markdown_document()
    assert document.count("```mermaid") == 1
    for state in RequestState:
        assert f"| `{state}` |" in document
    row = "| `released` | Released | The approved files have left the enclave. | nobody |"
    assert row in document


def test_checked_in_document_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == workflow.markdown_document(), (
        "docs/egress/request-states.md is out of date: "
        "regenerate with python -m egress.domain.workflow > docs/egress/request-states.md"
    )


def test_python_dash_m_prints_the_document():
    result = subprocess.run(
        [sys.executable, "-m", "egress.domain.workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == workflow.markdown_document()


STDLIB_ALLOWED = {"__future__", "collections", "dataclasses", "enum", "sys", "textwrap", "typing"}


def test_workflow_imports_only_the_standard_library():
    assert imported_packages(workflow) <= STDLIB_ALLOWED
