"""Who may do what to a release request, and in which state: one entry point for every check.

Pure and stdlib-only: the web service turns the logged-in user and the stored request into the
plain :class:`Actor` and :class:`RequestView` below, calls :func:`check` (or :func:`require`)
before every action and every view, and shows the :class:`Decision`'s reason when it refuses.
The states and transitions themselves come from ``egress.domain.workflow``; this module never
duplicates them (a workflow action is allowed by policy only where the workflow allows it).

A refusal has an HTTP-like status: **403** when this actor may never do this on this request
(wrong role, author of the request, not a member), **409** when the actor could, but not in the
request's current state or round (not submitted yet, review already submitted, votes not
complete...). The 403 checks run first, so a 403 never depends on the state.

Roles
    *Members* of a project see its requests; the *author* is the member who created one.
    *Output checkers* (``is_checker``) see the requests of every project and review them.
    *Administrators* (``is_admin``) see request details and the audit log of every project and
    can revoke a release; they don't see file contents, vote or comment. One person can hold
    several roles; each check looks at the facts it needs.

Rules
    * Authors never act as checkers on their own request, even when they are checkers or
      administrators: they can't vote, reset votes, submit a review, return, approve, reject,
      release or revoke it, write or read private checker comments on it, or read its audit
      log (403).
    * Download: the files of a request can only be downloaded once it is ``released``, and
      then only by members of its project, the author included (that is the point of a
      release). Before release nobody downloads anything, so no checker privilege ever lets
      an author take out their own unreviewed files. Checkers and administrators who are not
      members don't download released files (403): they see the files through the review
      view, which is not a download.
    * File contents: the browser is outside the enclave, so whatever the egress service shows
      a person has left it. Before release, only output checkers who are not the author see
      a file's bytes (``view_file``: the review view, its raw bytes, the
      differencing warning, re-executions), and only once the request has been submitted
      (``RequestView.submitted``: a draft, or a request withdrawn before it was ever
      submitted, is never shown to a checker). Authors and other members get ``view_preview``
      instead: a preview the service makes (kind, size, a table's shape, the checks' verdicts
      and counts; never a cell, a header or a line of text). Checkers and administrators who
      are not members of the project don't see unsubmitted requests at all (403, whatever
      the permission).
    * Only the author changes a request (files, context text) and submits or withdraws it;
      other project members can see it and comment while it is the author's turn.
    * Reviews are independent. While a request is ``submitted`` or ``under_review`` a checker
      can't see other checkers' votes, nor read the audit log (it shows votes); once a checker
      has submitted their review for the round, they can't vote, reset or comment until all
      required reviews are in. Checker-written comments of a round still in independent review
      should be shown to other checkers only when ``VIEW_VOTES_OF_OTHERS`` is allowed.
    * Once ``reviewed``, the reviewers of the round can change their votes (consolidation, as
      in OpenSAFELY Airlock) but not reset them to undecided; a checker who did not review in
      this round can no longer vote. Any checker who is not the author can then approve,
      return or reject; approval needs every file approved by every required reviewer.
    * A reviewer submits at most one review per round (409 the second time), and only after
      voting on every file. Only the votes of the round's submitted reviewers count, never the
      author's.
    * Project members see the checkers' votes once the checkers have finished (not while the
      request is ``submitted``, ``under_review`` or ``reviewed``).
    * ``reset_vote`` (a checker setting their own votes back to undecided, file by file or in
      bulk) is allowed in the safe direction only: before the checker's review is submitted.
    * ``revoke``: checkers (not the author) and administrators, on a ``released`` request.
    * ``release``: a checker who is not the author, on an ``approved`` request (the service
      may do it right after approval).
    * Changing a file's content resets its votes
      (``egress.domain.workflow.votes_after_file_change``), and resubmitting a returned request
      carries votes over as ``egress.domain.workflow.votes_after_resubmit`` says: the service
      applies these when it stores the change; the policy only decides that the change is
      allowed.
    * ``create``: members of the project (checkers included, for their own projects).
    * ``reexecute`` (ask the service to re-run a notebook of the request, trusted): checkers
      who are not the author, while the request is being reviewed (they may have submitted
      their review: a re-run shows no other checker's vote); and the author while it is theirs
      (draft, returned) or just submitted ("on submission"). Other members and administrators
      never (403): it spends the enclave's compute and adds evidence to the review.
    * Membership is checked on every action: an author who has left the project can't act on
      their requests any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from egress.domain.workflow import (
    DEFAULT_REVIEWS_REQUIRED,
    INDEPENDENT_REVIEW_STATES,
    REVIEW_STATES,
    Action,
    FileDecision,
    Party,
    RequestDecision,
    RequestState,
    Vote,
    allowed_actions,
    file_decision,
    request_decision,
    turn_of,
)

ALLOWED = 200
FORBIDDEN = 403
CONFLICT = 409


class Permission(StrEnum):
    """Everything the egress service lets someone do with a release request."""

    VIEW_REQUEST = "view_request"
    VIEW_FILE = "view_file"
    VIEW_PREVIEW = "view_preview"
    CREATE = "create"
    ADD_FILE = "add_file"
    REMOVE_FILE = "remove_file"
    EDIT_CONTEXT = "edit_context"
    SUBMIT = "submit"
    WITHDRAW = "withdraw"
    VOTE = "vote"
    RESET_VOTE = "reset_vote"
    COMMENT_PUBLIC = "comment_public"
    COMMENT_PRIVATE = "comment_private"
    VIEW_PRIVATE_COMMENTS = "view_private_comments"
    SUBMIT_REVIEW = "submit_review"
    RETURN = "return"
    APPROVE = "approve"
    REJECT = "reject"
    RELEASE = "release"
    DOWNLOAD_RELEASED = "download_released"
    REVOKE = "revoke"
    VIEW_VOTES_OF_OTHERS = "view_votes_of_others"
    VIEW_AUDIT = "view_audit"
    REEXECUTE = "reexecute"


WORKFLOW_ACTIONS: Mapping[Permission, Action] = {
    Permission.SUBMIT: Action.SUBMIT,
    Permission.WITHDRAW: Action.WITHDRAW,
    Permission.SUBMIT_REVIEW: Action.SUBMIT_REVIEW,
    Permission.RETURN: Action.RETURN,
    Permission.APPROVE: Action.APPROVE,
    Permission.REJECT: Action.REJECT,
    Permission.RELEASE: Action.RELEASE,
    Permission.REVOKE: Action.REVOKE,
}
"""The permissions that move a request: after :func:`require`, call ``workflow.next_state``."""


@dataclass(frozen=True)
class Actor:
    """The person asking, as the hub and the enclave configuration describe them."""

    username: str
    projects: frozenset[str]
    is_checker: bool
    is_admin: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "projects", frozenset(self.projects))


@dataclass(frozen=True)
class RequestView:
    """The facts about one release request that the policy needs.

    ``reviewers_who_submitted`` lists the checkers who submitted a review in the current round
    (the service empties it when a returned request is resubmitted). ``files`` maps each file id
    to its votes (reviewer username -> vote), empty for a file nobody voted on.
    ``groups_missing_context`` names the file groups still lacking context or controls text.
    ``submitted`` says whether the author has ever submitted the request (the service knows it
    from the request's first submission time); when not given it is read from the state: every
    state but ``draft`` and ``withdrawn`` comes after a submission, and a withdrawn request is
    taken as never submitted (the safe reading) unless the caller says otherwise.
    """

    id: str
    project: str
    author: str
    state: RequestState
    reviews_required: int = DEFAULT_REVIEWS_REQUIRED
    reviewers_who_submitted: frozenset[str] = frozenset()
    files: Mapping[str, Mapping[str, Vote]] = field(default_factory=dict)
    groups_missing_context: frozenset[str] = frozenset()
    submitted: bool | None = None

    def __post_init__(self) -> None:
        if self.reviews_required < 1:
            raise ValueError(f"reviews_required must be at least 1, not {self.reviews_required}.")
        object.__setattr__(self, "state", RequestState(self.state))
        if self.submitted is None:
            never = (RequestState.DRAFT, RequestState.WITHDRAWN)
            object.__setattr__(self, "submitted", self.state not in never)
        object.__setattr__(self, "submitted", bool(self.submitted))
        object.__setattr__(self, "reviewers_who_submitted", frozenset(self.reviewers_who_submitted))
        object.__setattr__(self, "groups_missing_context", frozenset(self.groups_missing_context))

    def counted_votes(self, file_id: str) -> dict[str, Vote]:
        """The votes on a file that count: the round's submitted reviewers', never the author's."""
        return {
            reviewer: vote
            for reviewer, vote in self.files[file_id].items()
            if reviewer in self.reviewers_who_submitted and reviewer != self.author
        }

    def file_decisions(self) -> dict[str, FileDecision]:
        """Each file's decision from the votes that count."""
        return {
            file_id: file_decision(self.counted_votes(file_id), self.reviews_required)
            for file_id in self.files
        }

    def decision(self) -> RequestDecision:
        """The request's decision: approvable only when every file is approved."""
        return request_decision(self.file_decisions())

    def undecided_files(self, reviewer: str) -> list[str]:
        """The files ``reviewer`` has not voted on yet (missing or undecided), sorted."""
        return sorted(
            file_id
            for file_id, votes in self.files.items()
            if votes.get(reviewer, Vote.UNDECIDED) is Vote.UNDECIDED
        )


@dataclass(frozen=True)
class Decision:
    """The answer to "may this actor do this?": allowed, or refused with a reason and status.

    ``status`` is 200 when allowed, 403 when the actor may never do this on this request, 409
    when the request's state or round doesn't allow it now. Test ``.allowed``: a Decision
    is always truthy, refusals included.
    """

    allowed: bool
    reason: str = ""
    status: int = ALLOWED


class PermissionDenied(Exception):
    """Raised by :func:`require` with the refusal's human reason and HTTP-like status."""

    def __init__(self, reason: str, status: int = FORBIDDEN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


_ALLOW = Decision(True)


def _forbid(reason: str) -> Decision:
    return Decision(False, reason, FORBIDDEN)


def _conflict(reason: str) -> Decision:
    return Decision(False, reason, CONFLICT)


def check(actor: Actor, permission: Permission, request: RequestView) -> Decision:
    """May ``actor`` do ``permission`` on ``request``, now?

    For :attr:`Permission.CREATE`, ``request`` describes the request about to be created; only
    its project matters (see :func:`check_create`).
    """
    permission = Permission(permission)
    if permission is Permission.CREATE:
        return check_create(actor, request.project)
    facts = _Facts(actor, request)
    if not (facts.is_member or actor.is_checker or actor.is_admin):
        return _forbid(
            f"You are not a member of project {request.project}; only its members and output "
            "checkers can see its requests."
        )
    if not (facts.is_member or request.submitted):
        return _forbid(
            "This request has not been submitted; output checkers and administrators see a "
            "request only once its author has submitted it."
        )
    return _RULES[permission](facts, permission)


def require(actor: Actor, permission: Permission, request: RequestView) -> None:
    """Like :func:`check`, but raise :class:`PermissionDenied` when refused."""
    decision = check(actor, permission, request)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, decision.status)


def check_create(actor: Actor, project: str) -> Decision:
    """May ``actor`` create a release request in ``project``? Only its members may."""
    if project in actor.projects:
        return _ALLOW
    return _forbid(f"Only members of project {project} can ask for releases from it.")


def allowed_permissions(actor: Actor, request: RequestView) -> frozenset[Permission]:
    """Every permission :func:`check` allows ``actor`` on ``request`` now (e.g. which buttons)."""
    return frozenset(p for p in Permission if check(actor, p, request).allowed)


# --- Rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    actor: Actor
    request: RequestView

    @property
    def state(self) -> RequestState:
        return self.request.state

    @property
    def is_member(self) -> bool:
        return self.request.project in self.actor.projects

    @property
    def is_author(self) -> bool:
        return self.actor.username == self.request.author

    @property
    def acts_as_checker(self) -> bool:
        """A checker who is not the author: may review this request."""
        return self.actor.is_checker and not self.is_author

    @property
    def has_submitted_review(self) -> bool:
        return self.actor.username in self.request.reviewers_who_submitted

    @property
    def all_reviews_in(self) -> str:
        required = self.request.reviews_required
        return (
            "the required review is in"
            if required == 1
            else f"all {required} required reviews are in"
        )


_CHECKER_VERBS: Mapping[Permission, str] = {
    Permission.VOTE: "vote on",
    Permission.RESET_VOTE: "review",
    Permission.SUBMIT_REVIEW: "review",
    Permission.RETURN: "return",
    Permission.APPROVE: "approve",
    Permission.REJECT: "reject",
    Permission.RELEASE: "release",
    Permission.COMMENT_PRIVATE: "write private checker comments on",
    Permission.VIEW_PRIVATE_COMMENTS: "read private checker comments on",
}

_AUTHOR_VERBS: Mapping[Permission, str] = {
    Permission.ADD_FILE: "add files to",
    Permission.REMOVE_FILE: "remove files from",
    Permission.EDIT_CONTEXT: "edit the context of",
    Permission.SUBMIT: "submit",
    Permission.WITHDRAW: "withdraw",
}

_PARTICIPLES: Mapping[Action, str] = {
    Action.SUBMIT: "submitted",
    Action.SUBMIT_REVIEW: "reviewed",
    Action.APPROVE: "approved",
    Action.RETURN: "returned",
    Action.REJECT: "rejected",
    Action.RELEASE: "released",
    Action.REVOKE: "revoked",
    Action.WITHDRAW: "withdrawn",
}


def _say(state: RequestState) -> str:
    return str(state).replace("_", " ")


def _join_or(words: Iterable[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _some(items: list[str], shown: int = 5) -> str:
    listed = ", ".join(items[:shown])
    return listed if len(items) <= shown else f"{listed} and {len(items) - shown} more"


def _workflow_gate(facts: _Facts, action: Action) -> Decision | None:
    """409 unless the workflow allows ``action`` in the request's state."""
    if action in allowed_actions(facts.state):
        return None
    sources = [_say(s) for s in RequestState if action in allowed_actions(s)]
    return _conflict(
        f"This request is {_say(facts.state)}; only a request that is {_join_or(sources)} "
        f"can be {_PARTICIPLES[action]}."
    )


def _author_gate(facts: _Facts, permission: Permission) -> Decision | None:
    """403 unless the actor is the request's author and still a member of its project."""
    if not facts.is_author:
        return _forbid(
            f"Only the author of this request ({facts.request.author}) can "
            f"{_AUTHOR_VERBS[permission]} it."
        )
    if not facts.is_member:
        return _forbid(f"You are no longer a member of project {facts.request.project}.")
    return None


def _checker_gate(facts: _Facts, permission: Permission) -> Decision | None:
    """403 unless the actor is an output checker and not the request's author."""
    verb = _CHECKER_VERBS[permission]
    if facts.is_author:
        return _forbid(
            f"You are the author of this request; authors can't {verb} their own request."
        )
    if not facts.actor.is_checker:
        return _forbid(f"Only output checkers can {verb} requests.")
    return None


def _checker_round_gate(facts: _Facts, doing: str) -> Decision | None:
    """409 when the checker's review is in but the round is still independent."""
    if facts.state in INDEPENDENT_REVIEW_STATES and facts.has_submitted_review:
        return _conflict(
            f"You have already submitted your review for this round; you can {doing} again "
            f"once {facts.all_reviews_in}."
        )
    return None


def _view_request(facts: _Facts, permission: Permission) -> Decision:
    return _ALLOW


def _view_file(facts: _Facts, permission: Permission) -> Decision:
    """The bytes of a file before release: reviewing checkers only, once submitted."""
    if facts.is_author:
        return _forbid(
            "You are the author of this request; the egress service never gives authors the "
            "contents of their files before release (the request page shows the checks and a "
            "preview; released files are downloaded)."
        )
    if facts.acts_as_checker:
        if not facts.request.submitted:
            return _conflict(
                "This request has not been submitted yet; checkers see its files once its "
                "author has submitted it."
            )
        return _ALLOW
    if facts.is_member:
        return _forbid(
            "Only output checkers see the contents of a file; project members see its checks "
            "and a preview, and download it once it is released."
        )
    return _forbid("Administrators see request details and the audit log, not file contents.")


def _view_preview(facts: _Facts, permission: Permission) -> Decision:
    """The server-made preview (kind, size, shape, verdicts; no cell): members and checkers."""
    if facts.is_member or facts.acts_as_checker:
        return _ALLOW
    if facts.actor.is_checker:  # the author, no longer a member
        return _forbid(f"You are no longer a member of project {facts.request.project}.")
    return _forbid("Administrators see request details and the audit log, not file contents.")


def _edit(facts: _Facts, permission: Permission) -> Decision:
    if refusal := _author_gate(facts, permission):
        return refusal
    if turn_of(facts.state) is not Party.AUTHOR:
        return _conflict(
            f"This request is {_say(facts.state)}; files and context can only be changed while "
            "it is a draft or returned to its author."
        )
    return _ALLOW


def _submit(facts: _Facts, permission: Permission) -> Decision:
    if refusal := _author_gate(facts, permission) or _workflow_gate(facts, Action.SUBMIT):
        return refusal
    if not facts.request.files:
        return _conflict("Add at least one file before submitting this request.")
    if missing := sorted(facts.request.groups_missing_context):
        return _conflict(
            "Every file group needs its context and controls before submitting; "
            f"still missing for: {_some(missing)}."
        )
    return _ALLOW


def _withdraw(facts: _Facts, permission: Permission) -> Decision:
    return _author_gate(facts, permission) or _workflow_gate(facts, Action.WITHDRAW) or _ALLOW


def _vote(facts: _Facts, permission: Permission) -> Decision:
    if refusal := _checker_gate(facts, permission) or _checker_round_gate(facts, "vote"):
        return refusal
    if facts.state in INDEPENDENT_REVIEW_STATES:
        return _ALLOW
    if facts.state is RequestState.REVIEWED:
        if facts.has_submitted_review:
            return _ALLOW
        return _conflict(
            f"Now that {facts.all_reviews_in}, only the checkers who reviewed in this round "
            "can change their votes."
        )
    return _conflict(
        f"This request is {_say(facts.state)}; votes are cast while it is being reviewed."
    )


def _reset_vote(facts: _Facts, permission: Permission) -> Decision:
    if refusal := _checker_gate(facts, permission):
        return refusal
    if facts.state in INDEPENDENT_REVIEW_STATES:
        if facts.has_submitted_review:
            return _conflict("Your review for this round is submitted; its votes can't be reset.")
        return _ALLOW
    if facts.state is RequestState.REVIEWED:
        return _conflict(
            f"Now that {facts.all_reviews_in}, votes can be changed but not reset to undecided."
        )
    return _conflict(
        f"This request is {_say(facts.state)}; votes can be reset only while it is being reviewed."
    )


def _submit_review(facts: _Facts, permission: Permission) -> Decision:
    if refusal := _checker_gate(facts, permission):
        return refusal
    if facts.state is RequestState.REVIEWED:
        return _conflict(f"No more reviews are needed: {facts.all_reviews_in}.")
    if refusal := _workflow_gate(facts, Action.SUBMIT_REVIEW):
        return refusal
    if facts.has_submitted_review:
        return _conflict("You have already submitted your review for this round.")
    if not facts.request.files:
        return _conflict("This request has no files to review.")
    if undecided := facts.request.undecided_files(facts.actor.username):
        return _conflict(
            "Vote on every file before submitting your review; still undecided: "
            f"{_some(undecided)}."
        )
    return _ALLOW


def _decide(facts: _Facts, permission: Permission) -> Decision:
    """Return, reject, release: a checker who is not the author, where the workflow allows."""
    return (
        _checker_gate(facts, permission)
        or _workflow_gate(facts, WORKFLOW_ACTIONS[permission])
        or _ALLOW
    )


def _approve(facts: _Facts, permission: Permission) -> Decision:
    if refusal := _checker_gate(facts, permission) or _workflow_gate(facts, Action.APPROVE):
        return refusal
    decisions = facts.request.file_decisions()
    not_approved = sorted(f for f, d in decisions.items() if d is not FileDecision.APPROVED)
    if not decisions:
        return _conflict("This request has no files to approve.")
    if not_approved:
        return _conflict(
            f"Every file must be approved by all {facts.request.reviews_required} required "
            f"reviewers ({facts.request.decision()}); not approved: {_some(not_approved)}."
        )
    return _ALLOW


def _checker_comment(facts: _Facts) -> Decision:
    if refusal := _checker_round_gate(facts, "comment"):
        return refusal
    if facts.state in REVIEW_STATES:
        return _ALLOW
    return _conflict(
        f"This request is {_say(facts.state)}; checkers comment while it is being reviewed."
    )


def _comment_private(facts: _Facts, permission: Permission) -> Decision:
    return _checker_gate(facts, permission) or _checker_comment(facts)


def _view_private_comments(facts: _Facts, permission: Permission) -> Decision:
    return _checker_gate(facts, permission) or _ALLOW


def _comment_public(facts: _Facts, permission: Permission) -> Decision:
    if not (facts.is_member or facts.acts_as_checker):
        return _forbid(
            f"Only members of project {facts.request.project} and output checkers can comment "
            "on its requests."
        )
    if turn_of(facts.state) is Party.NOBODY:
        return _conflict(f"This request is {_say(facts.state)}; comments are closed.")
    as_checker = _checker_comment(facts) if facts.acts_as_checker else None
    if as_checker and as_checker.allowed:
        return as_checker
    if facts.is_member:
        if turn_of(facts.state) is Party.AUTHOR:
            return _ALLOW
        if as_checker is None:
            return _conflict(
                "It is the checkers' turn; you can comment again if the request is returned to "
                "its author."
            )
    assert as_checker is not None
    return as_checker


def _download_released(facts: _Facts, permission: Permission) -> Decision:
    if not facts.is_member:
        return _forbid(
            f"Only members of project {facts.request.project} can download its released files."
        )
    if facts.state is RequestState.REVOKED:
        return _conflict("This release was revoked; its files can no longer be downloaded.")
    if facts.state is not RequestState.RELEASED:
        return _conflict(
            f"This request is {_say(facts.state)}; only released files can be downloaded."
        )
    return _ALLOW


def _revoke(facts: _Facts, permission: Permission) -> Decision:
    if facts.is_author:
        return _forbid(
            "You are the author of this request; authors can't revoke their own release. "
            "Ask an output checker or an administrator."
        )
    if not (facts.actor.is_checker or facts.actor.is_admin):
        return _forbid("Only output checkers and administrators can revoke a release.")
    return _workflow_gate(facts, Action.REVOKE) or _ALLOW


def _view_votes_of_others(facts: _Facts, permission: Permission) -> Decision:
    if facts.acts_as_checker:
        if facts.state in INDEPENDENT_REVIEW_STATES:
            return _conflict(
                "Reviews are independent: other checkers' votes are shown once "
                f"{facts.all_reviews_in}."
            )
        return _ALLOW
    if facts.state in REVIEW_STATES:
        return _conflict("The checkers' votes are shown once they have finished reviewing.")
    return _ALLOW


def _view_audit(facts: _Facts, permission: Permission) -> Decision:
    if facts.is_author:
        return _forbid(
            "You are the author of this request; authors can't read the audit log of their own "
            "request."
        )
    if facts.acts_as_checker and facts.state in INDEPENDENT_REVIEW_STATES:
        return _conflict(
            "The audit log shows reviewers' votes; checkers can read it once "
            f"{facts.all_reviews_in}."
        )
    if facts.actor.is_admin or facts.actor.is_checker:
        return _ALLOW
    return _forbid("Only output checkers and administrators can read the audit log.")


def _reexecute(facts: _Facts, permission: Permission) -> Decision:
    if facts.acts_as_checker:
        if facts.state in REVIEW_STATES:
            return _ALLOW
        return _conflict(
            f"This request is {_say(facts.state)}; checkers ask for a trusted re-execution "
            "while it is being reviewed."
        )
    if facts.is_author and facts.is_member:
        if turn_of(facts.state) is Party.AUTHOR or facts.state is RequestState.SUBMITTED:
            return _ALLOW
        return _conflict(
            f"This request is {_say(facts.state)}; its author can ask for a trusted "
            "re-execution while it is a draft, returned, or just submitted."
        )
    if facts.is_author:
        return _forbid(f"You are no longer a member of project {facts.request.project}.")
    return _forbid(
        "Only output checkers and the request's author can ask for a trusted re-execution."
    )


_RULES: Mapping[Permission, Callable[[_Facts, Permission], Decision]] = {
    Permission.VIEW_REQUEST: _view_request,
    Permission.VIEW_FILE: _view_file,
    Permission.VIEW_PREVIEW: _view_preview,
    Permission.ADD_FILE: _edit,
    Permission.REMOVE_FILE: _edit,
    Permission.EDIT_CONTEXT: _edit,
    Permission.SUBMIT: _submit,
    Permission.WITHDRAW: _withdraw,
    Permission.VOTE: _vote,
    Permission.RESET_VOTE: _reset_vote,
    Permission.COMMENT_PUBLIC: _comment_public,
    Permission.COMMENT_PRIVATE: _comment_private,
    Permission.VIEW_PRIVATE_COMMENTS: _view_private_comments,
    Permission.SUBMIT_REVIEW: _submit_review,
    Permission.RETURN: _decide,
    Permission.APPROVE: _approve,
    Permission.REJECT: _decide,
    Permission.RELEASE: _decide,
    Permission.DOWNLOAD_RELEASED: _download_released,
    Permission.REVOKE: _revoke,
    Permission.VIEW_VOTES_OF_OTHERS: _view_votes_of_others,
    Permission.VIEW_AUDIT: _view_audit,
    Permission.REEXECUTE: _reexecute,
}
