"""Release-request states, the actions that move a request between them, and the file votes.

This module is the single source of truth for the release-request workflow of the egress
service. It is pure: plain data in, plain data out, no web framework, no database, no clock.

A request is a set of files a researcher (the *author*) asks to take out of the enclave. Output
checkers review it independently; only approved bytes are released.

Request states
    ``draft`` (the author is assembling files) -> ``submitted`` (waiting for reviewers) ->
    ``under_review`` (at least one review in, fewer than required) -> ``reviewed`` (all required
    reviews in, a checker decides) -> ``approved`` -> ``released``. From ``reviewed`` a checker can
    also ``return`` the request to its author (who changes it and resubmits) or ``reject`` it.
    The author can ``withdraw`` it at any point before approval. A release can be ``revoke``-d
    afterwards (for example when a disclosure is found later): the request becomes ``revoked``.

Rules
    * ``return`` is only possible from ``reviewed``, as in OpenSAFELY Airlock's original design:
      every required review must be in first, so one checker alone can't cut the other's
      independent review short. A request that is obviously not ready is still handled: the
      checkers finish their (short) reviews, then return it; the author can withdraw at any time.
    * ``withdraw`` is possible from every state before approval (``draft``, ``submitted``,
      ``under_review``, ``reviewed``, ``returned``), not after: an approved request is the
      checkers' decision and is released next.
    * ``submit`` from ``returned`` starts a new review round: the service clears the round's list
      of submitted reviewers; file votes carry over as :func:`votes_after_resubmit` says (approvals
      of unchanged files stay, requests for changes become undecided so a checker looks again).
    * ``submit_review`` is one action whose target depends on how many reviews are in:
      ``under_review`` while more are needed, ``reviewed`` with the last required one (straight
      from ``submitted`` when a project requires a single review).
    * ``approved`` is the checkers' turn: a checker performs ``release`` (the service may do it
      right after approval); ``released`` is nobody's turn (``revoke`` is an exception, not a
      step anyone is expected to take).
    * Terminal: ``rejected``, ``withdrawn``, ``revoked``. ``released`` is final except for
      ``revoke``.

File votes
    Each reviewer votes per file: ``approve``, ``request_changes`` or ``undecided``.
    :func:`file_decision` combines the votes of the reviewers who submitted their review into
    approved / changes requested / conflicted / incomplete, and :func:`request_decision`
    combines the files: a request can be approved only when every file is approved by all
    required reviewers. Changing a file's content resets its votes
    (:func:`votes_after_file_change`). Who may vote is a policy question (``egress.domain.policy``).

``python -m egress.domain.workflow`` prints the Markdown document ``docs/egress/request-states.md``
(a Mermaid state diagram and a table), which a test keeps in step with this module.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_REVIEWS_REQUIRED = 2
"""Independent reviews a request needs before a decision, unless the project sets another."""


class RequestState(StrEnum):
    """Where a release request is in its life."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    UNDER_REVIEW = "under_review"
    REVIEWED = "reviewed"
    RETURNED = "returned"
    APPROVED = "approved"
    RELEASED = "released"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    REVOKED = "revoked"


class Action(StrEnum):
    """What moves a request from one state to another."""

    SUBMIT = "submit"
    SUBMIT_REVIEW = "submit_review"
    APPROVE = "approve"
    RETURN = "return"
    REJECT = "reject"
    RELEASE = "release"
    REVOKE = "revoke"
    WITHDRAW = "withdraw"


class Party(StrEnum):
    """Who is expected to act next on a request."""

    AUTHOR = "author"
    CHECKERS = "checkers"
    NOBODY = "nobody"


STATE_MEANINGS: Mapping[RequestState, str] = {
    RequestState.DRAFT: "The author is assembling files and their context.",
    RequestState.SUBMITTED: "Waiting for output checkers; no review is in yet.",
    RequestState.UNDER_REVIEW: "At least one review is in, fewer than required.",
    RequestState.REVIEWED: "All required reviews are in; a checker decides.",
    RequestState.RETURNED: "Back with the author for changes, then resubmission.",
    RequestState.APPROVED: "Approved; the files are about to be released.",
    RequestState.RELEASED: "The approved files have left the enclave.",
    RequestState.REJECTED: "Refused; nothing is released.",
    RequestState.WITHDRAWN: "The author withdrew the request.",
    RequestState.REVOKED: "Released, then revoked: no further downloads.",
}
"""One sentence per state, for documents and screens."""

STATE_LABELS: Mapping[RequestState, str] = {
    RequestState.DRAFT: "Draft",
    RequestState.SUBMITTED: "Waiting for review",
    RequestState.UNDER_REVIEW: "Under review",
    RequestState.REVIEWED: "Reviewed, awaiting decision",
    RequestState.RETURNED: "Changes requested",
    RequestState.APPROVED: "Approved",
    RequestState.RELEASED: "Released",
    RequestState.REJECTED: "Rejected",
    RequestState.WITHDRAWN: "Withdrawn",
    RequestState.REVOKED: "Release revoked",
}
"""The words people read for each state: the one mapping every page and the API's
``state_label`` field use (the state's name stays the machine's word)."""

STATE_TONES: Mapping[RequestState, str] = {
    RequestState.DRAFT: "neutral",
    RequestState.SUBMITTED: "progress",
    RequestState.UNDER_REVIEW: "progress",
    RequestState.REVIEWED: "progress",
    RequestState.RETURNED: "attention",
    RequestState.APPROVED: "good",
    RequestState.RELEASED: "good",
    RequestState.REJECTED: "bad",
    RequestState.WITHDRAWN: "neutral",
    RequestState.REVOKED: "bad",
}
"""The colour family of each state's badge: ``neutral``, ``progress``, ``attention`` (the
author must act), ``good`` or ``bad``."""


def state_label(state: RequestState | str) -> str:
    """The human label of ``state`` (``"under_review"`` -> ``"Under review"``)."""
    return STATE_LABELS[RequestState(state)]


def state_tone(state: RequestState | str) -> str:
    """The badge colour family of ``state`` (see :data:`STATE_TONES`)."""
    return STATE_TONES[RequestState(state)]


TERMINAL_STATES: frozenset[RequestState] = frozenset(
    {RequestState.REJECTED, RequestState.WITHDRAWN, RequestState.REVOKED}
)
"""States no action leaves."""

REVIEW_STATES: frozenset[RequestState] = frozenset(
    {RequestState.SUBMITTED, RequestState.UNDER_REVIEW, RequestState.REVIEWED}
)
"""States in which output checkers are reviewing (votes and checker comments are open)."""

INDEPENDENT_REVIEW_STATES: frozenset[RequestState] = frozenset(
    {RequestState.SUBMITTED, RequestState.UNDER_REVIEW}
)
"""States in which reviews are independent: reviewers can't see each other's votes yet."""

TURN: Mapping[RequestState, Party] = {
    RequestState.DRAFT: Party.AUTHOR,
    RequestState.SUBMITTED: Party.CHECKERS,
    RequestState.UNDER_REVIEW: Party.CHECKERS,
    RequestState.REVIEWED: Party.CHECKERS,
    RequestState.RETURNED: Party.AUTHOR,
    RequestState.APPROVED: Party.CHECKERS,
    RequestState.RELEASED: Party.NOBODY,
    RequestState.REJECTED: Party.NOBODY,
    RequestState.WITHDRAWN: Party.NOBODY,
    RequestState.REVOKED: Party.NOBODY,
}
"""Whose turn it is in each state."""

TRANSITIONS: Mapping[tuple[RequestState, Action], RequestState] = {
    (RequestState.DRAFT, Action.SUBMIT): RequestState.SUBMITTED,
    (RequestState.RETURNED, Action.SUBMIT): RequestState.SUBMITTED,
    (RequestState.DRAFT, Action.WITHDRAW): RequestState.WITHDRAWN,
    (RequestState.SUBMITTED, Action.WITHDRAW): RequestState.WITHDRAWN,
    (RequestState.UNDER_REVIEW, Action.WITHDRAW): RequestState.WITHDRAWN,
    (RequestState.REVIEWED, Action.WITHDRAW): RequestState.WITHDRAWN,
    (RequestState.RETURNED, Action.WITHDRAW): RequestState.WITHDRAWN,
    (RequestState.REVIEWED, Action.RETURN): RequestState.RETURNED,
    (RequestState.REVIEWED, Action.APPROVE): RequestState.APPROVED,
    (RequestState.REVIEWED, Action.REJECT): RequestState.REJECTED,
    (RequestState.APPROVED, Action.RELEASE): RequestState.RELEASED,
    (RequestState.RELEASED, Action.REVOKE): RequestState.REVOKED,
}
"""Every transition whose target is fixed: (from state, action) -> to state.

``submit_review`` is not here: its target depends on the review count (see
:data:`REVIEW_SUBMISSION_STATES` and :func:`next_state`).
"""

REVIEW_SUBMISSION_STATES: frozenset[RequestState] = INDEPENDENT_REVIEW_STATES
"""States from which ``submit_review`` is allowed (to ``under_review`` or ``reviewed``)."""


@dataclass(frozen=True)
class Transition:
    """One edge of the state diagram, with the condition under which it is taken."""

    source: RequestState
    action: Action
    target: RequestState
    condition: str = ""


def _review_edges() -> tuple[Transition, ...]:
    more = "more reviews needed"
    last = "last required review"
    return (
        Transition(RequestState.SUBMITTED, Action.SUBMIT_REVIEW, RequestState.UNDER_REVIEW, more),
        Transition(RequestState.SUBMITTED, Action.SUBMIT_REVIEW, RequestState.REVIEWED, last),
        Transition(
            RequestState.UNDER_REVIEW, Action.SUBMIT_REVIEW, RequestState.UNDER_REVIEW, more
        ),
        Transition(RequestState.UNDER_REVIEW, Action.SUBMIT_REVIEW, RequestState.REVIEWED, last),
    )


EDGES: tuple[Transition, ...] = tuple(
    sorted(
        [Transition(source, action, target) for (source, action), target in TRANSITIONS.items()]
        + list(_review_edges()),
        key=lambda edge: (
            list(RequestState).index(edge.source),
            list(Action).index(edge.action),
            list(RequestState).index(edge.target),
        ),
    )
)
"""Every possible transition, including both outcomes of ``submit_review``; for diagrams."""


class InvalidTransition(ValueError):
    """An action that the workflow does not allow in the request's current state."""

    def __init__(self, state: RequestState, action: Action) -> None:
        self.state = state
        self.action = action
        self.allowed = allowed_actions(state)
        if self.allowed:
            listed = ", ".join(sorted(str(a) for a in self.allowed))
            hint = f"allowed in state {state}: {listed}"
        else:
            hint = f"no action is allowed in state {state}: it is final"
        super().__init__(f"Can't {action} a request that is {state}; {hint}.")


def allowed_actions(state: RequestState) -> frozenset[Action]:
    """The actions the workflow allows in ``state`` (whoever performs them)."""
    actions = {action for (source, action) in TRANSITIONS if source == state}
    if state in REVIEW_SUBMISSION_STATES:
        actions.add(Action.SUBMIT_REVIEW)
    return frozenset(actions)


def is_terminal(state: RequestState) -> bool:
    """True for states that no action leaves (rejected, withdrawn, revoked)."""
    return state in TERMINAL_STATES


def turn_of(state: RequestState) -> Party:
    """The party expected to act next on a request in ``state``."""
    return TURN[state]


def next_state(
    state: RequestState,
    action: Action,
    *,
    reviews_in: int | None = None,
    reviews_required: int = DEFAULT_REVIEWS_REQUIRED,
) -> RequestState:
    """The state a request moves to when ``action`` is taken in ``state``.

    For ``submit_review``, ``reviews_in`` is the number of reviews submitted in this round
    *counting the one being submitted now* (1 for the first review), and ``reviews_required``
    the number the project requires: the request becomes ``reviewed`` with the last required
    review and ``under_review`` before that.

    Raises :class:`InvalidTransition` for an action the state does not allow, and
    ``ValueError`` when the review counts are missing or contradict the state (e.g. a first
    review of a request that is already ``under_review``).
    """
    state = RequestState(state)
    action = Action(action)
    if action is Action.SUBMIT_REVIEW:
        if state not in REVIEW_SUBMISSION_STATES:
            raise InvalidTransition(state, action)
        return _state_after_review(state, reviews_in, reviews_required)
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise InvalidTransition(state, action) from None


def _state_after_review(
    state: RequestState, reviews_in: int | None, reviews_required: int
) -> RequestState:
    if reviews_required < 1:
        raise ValueError(f"reviews_required must be at least 1, not {reviews_required}.")
    if reviews_in is None:
        raise ValueError("submit_review needs reviews_in: the reviews in, counting this one.")
    if not 1 <= reviews_in <= reviews_required:
        raise ValueError(
            f"reviews_in must be between 1 and reviews_required ({reviews_required}), "
            f"not {reviews_in}."
        )
    if state is RequestState.SUBMITTED and reviews_in != 1:
        raise ValueError(
            f"A submitted request has no review in yet, so this is review 1, not {reviews_in}."
        )
    if state is RequestState.UNDER_REVIEW and reviews_in < 2:
        raise ValueError("A request under review already has a review in; this is review 2+.")
    if reviews_in == reviews_required:
        return RequestState.REVIEWED
    return RequestState.UNDER_REVIEW


# --- File-level review model -------------------------------------------------------------


class Vote(StrEnum):
    """One reviewer's vote on one file."""

    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    UNDECIDED = "undecided"


class FileDecision(StrEnum):
    """What the submitted reviews say about one file."""

    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    CONFLICTED = "conflicted"
    INCOMPLETE = "incomplete"


class RequestDecision(StrEnum):
    """What the file decisions say about the whole request, in order of precedence.

    ``incomplete``: some file lacks the required reviews (or there are no files);
    ``conflicted``: reviewers disagree on some file; they discuss, change votes, return or
    reject; ``changes_requested``: no disagreement, some file needs changes: return (or reject);
    ``approvable``: every file is approved by all required reviewers.
    """

    INCOMPLETE = "incomplete"
    CONFLICTED = "conflicted"
    CHANGES_REQUESTED = "changes_requested"
    APPROVABLE = "approvable"


def file_decision(
    votes: Mapping[str, Vote], reviews_required: int = DEFAULT_REVIEWS_REQUIRED
) -> FileDecision:
    """Combine the votes on one file (reviewer username -> vote) into a decision.

    Pass only the votes of reviewers who submitted their review in this round: a vote still
    being drafted must not count. Undecided votes don't count. Fewer than ``reviews_required``
    decided votes: incomplete; otherwise all approve: approved; all request changes: changes
    requested; a mix: conflicted.
    """
    decided = [vote for vote in votes.values() if vote is not Vote.UNDECIDED]
    if len(decided) < reviews_required:
        return FileDecision.INCOMPLETE
    if all(vote is Vote.APPROVE for vote in decided):
        return FileDecision.APPROVED
    if all(vote is Vote.REQUEST_CHANGES for vote in decided):
        return FileDecision.CHANGES_REQUESTED
    return FileDecision.CONFLICTED


def request_decision(files: Mapping[str, FileDecision]) -> RequestDecision:
    """Combine per-file decisions (file id -> decision) into the request's decision.

    The request is approvable only when it has files and every one of them is approved.
    """
    decisions = set(files.values())
    if not decisions or FileDecision.INCOMPLETE in decisions:
        return RequestDecision.INCOMPLETE
    if FileDecision.CONFLICTED in decisions:
        return RequestDecision.CONFLICTED
    if FileDecision.CHANGES_REQUESTED in decisions:
        return RequestDecision.CHANGES_REQUESTED
    return RequestDecision.APPROVABLE


def votes_after_file_change(votes: Mapping[str, Vote]) -> dict[str, Vote]:
    """The votes on a file after its content changed: every reviewer's vote is undecided.

    A vote is about bytes; new bytes need new votes. The reviewers stay listed so that the
    screen can show who had voted on the old content.
    """
    return {reviewer: Vote.UNDECIDED for reviewer in votes}


def votes_after_resubmit(votes: Mapping[str, Vote]) -> dict[str, Vote]:
    """The votes on an unchanged file when a returned request is resubmitted.

    Approvals stay (the bytes they approved have not changed); requests for changes become
    undecided so that a checker looks again. Every reviewer must still submit a review in the
    new round, and only the votes of that round's reviewers count.
    """
    return {
        reviewer: Vote.UNDECIDED if vote is Vote.REQUEST_CHANGES else vote
        for reviewer, vote in votes.items()
    }


# --- Documentation -----------------------------------------------------------------------


def _edge_label(edge: Transition) -> str:
    if edge.condition:
        return f"{edge.action} ({edge.condition})"
    return str(edge.action)


def mermaid_diagram() -> str:
    """The workflow as a Mermaid ``stateDiagram-v2``, generated from :data:`EDGES`."""
    lines = ["stateDiagram-v2", f"    [*] --> {RequestState.DRAFT}"]
    lines += [f"    {e.source} --> {e.target}: {_edge_label(e)}" for e in EDGES]
    lines += [f"    {state} --> [*]" for state in RequestState if is_terminal(state)]
    return "\n".join(lines) + "\n"


def _transitions_cell(state: RequestState) -> str:
    outgoing = [edge for edge in EDGES if edge.source == state]
    if not outgoing:
        return "none (final)"
    return "<br>".join(
        f"`{e.action}`{f' ({e.condition})' if e.condition else ''} → `{e.target}`" for e in outgoing
    )


def markdown_document() -> str:
    """The Markdown page ``docs/egress/request-states.md``, generated from this module."""
    terminal = ", ".join(f"`{s}`" for s in RequestState if is_terminal(s))
    summary = textwrap.fill(
        "A release request starts as a `draft` that its author fills with files and their "
        f"context. Once submitted, it is reviewed by {DEFAULT_REVIEWS_REQUIRED} independent "
        "output checkers (the number is configurable per project), who can't see each other's "
        "votes until all required reviews are in (`reviewed`). Then a checker approves it (only "
        "if every file is approved by every required reviewer), returns it to the author for "
        "changes (resubmitting starts a new review round), or rejects it. Approved requests are "
        "released, and a release can later be revoked. The author can withdraw a request at any "
        f"point before approval. Final states: {terminal}; `released` is final except for "
        "`revoke`. Who may perform each action is decided in `egress/domain/policy.py`.",
        width=100,
    )
    rows = "\n".join(
        f"| `{state}` | {STATE_LABELS[state]} | {STATE_MEANINGS[state]} | {turn_of(state)} "
        f"| {_transitions_cell(state)} |"
        for state in RequestState
    )
    return f"""<!-- Generated by `python -m egress.domain.workflow`; do not edit by hand. -->
# Release-request states

{summary}

```mermaid
{mermaid_diagram().rstrip()}
```

| State | Shown as | Meaning | Whose turn | Allowed actions → next state |
| --- | --- | --- | --- | --- |
{rows}
"""


def main() -> None:
    """Print the Markdown document (``python -m egress.domain.workflow > docs/egress/...``)."""
    sys.stdout.write(markdown_document())


if __name__ == "__main__":
    main()
