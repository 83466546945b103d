"""The SDC badge checkers see on a file: the service's own check set against the library's record.

The egress service can check a CSV/TSV of numbers only as a table of **counts** (threshold,
zeros, blanks recoverable from the margins). It cannot tell from the file which statistic the
numbers are: a table of sums with one dominant contributor, a rounded mean or a max table are
whole numbers too. So a file gets a count **pass** only when the statistic is known to be a
count, and the only place that says so is the record the researcher's library
(:mod:`havre.safe`) wrote for *that exact file* in its folder's ``results.json``: the same
file name **and** the same sha256. That record is the researcher's library's claim (the
notebook wrote it, in the researcher's own process), and is labelled so.

The rules (:func:`combine`), for a table the service checked as counts:

* a count-rule **fail** stays a fail (small whole numbers may be counts, whatever is claimed);
* the badge is never better than the library record's own verdict (worst of the two), and the
  library's reasons are shown with it, labelled as its claim;
* unless the library's record for this exact file says the statistic is ``count``, the verdict
  is at most **review**, with a sentence saying why (another statistic, no record, a record
  for other bytes: "changed after the library checked it", or an unreadable record);
* a record made with parameters weaker than the project's (e.g. a lowered threshold) makes the
  verdict at most **review**, with a sentence naming each relaxed parameter and both values.

A file that was changed after the library checked it never shows the library's verdict as a
verdict: only that it changed.

Pure: the caller reads the files (:class:`LibraryRecords` takes a ``read`` function). Standard
library plus :class:`havre.sdc.SDCParams`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from havre.sdc.params import SDCParams, SDCParamsError

__all__ = [
    "BADGE_VERSION",
    "LIBRARY_LABEL",
    "LibraryReadError",
    "LibraryRecords",
    "combine",
    "view_check",
    "worst",
]

#: Bumped when the badge's rules change; stored with each badge.
BADGE_VERSION = 1

#: How the library's record is labelled wherever it is shown.
LIBRARY_LABEL = (
    "the researcher's library's claim: written by the notebook into results.json in the "
    "project's outputs folder; the service did not compute it"
)

_ORDER = {"pass": 0, "review": 1, "fail": 2}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RESULTS = "results.json"
_CHECKSUMS = "checksums"
#: Reasons of the library's record kept with the badge.
_LIBRARY_REASONS = 20


class LibraryReadError(Exception):
    """A library file exists but can't be read (too large, a link, ...): ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def worst(*verdicts: str | None) -> str | None:
    """The most severe of ``verdicts`` (``fail`` > ``review`` > ``pass``); None if none given."""
    known = [v for v in verdicts if v in _ORDER]
    if not known:
        return None
    return max(known, key=_ORDER.__getitem__)


def _verdict(value: object) -> str | None:
    text = str(value).strip().lower() if value is not None else ""
    return text if text in _ORDER else None


def _split(path: str) -> tuple[str, str]:
    """(folder with a trailing slash or "", file name) of an outputs-relative path."""
    if "/" in path:
        folder, name = path.rsplit("/", 1)
        return folder + "/", name
    return "", path


def _short(value: object, limit: int) -> str:
    return str(value)[:limit]


class LibraryRecords:
    """Finds the library's record of each file; reads each folder's ``results.json`` once.

    ``read(relative_path)`` returns the bytes of a file of the project's outputs folder,
    ``None`` when it does not exist, or raises :class:`LibraryReadError` with a sentence.
    ``project_params``: the parameters the project's outputs are checked with.
    """

    def __init__(self, read: Callable[[str], bytes | None], project_params: SDCParams) -> None:
        self._read = read
        self.project_params = project_params
        self._folders: dict[str, tuple[dict[str, Any] | None, str | None]] = {}

    def _results(self, folder: str) -> tuple[dict[str, Any] | None, str | None]:
        """The parsed ``results.json`` of ``folder`` (or None) and the problem reading it."""
        if folder not in self._folders:
            path = folder + _RESULTS
            try:
                data = self._read(path)
            except LibraryReadError as exc:
                self._folders[folder] = (None, f"{path} can't be read: {exc.reason}")
            else:
                if data is None:
                    self._folders[folder] = (None, None)
                else:
                    self._folders[folder] = _parse_results(path, data)
        return self._folders[folder]

    def for_file(self, path: str, sha256: str) -> dict[str, Any]:
        """The library block of the file at ``path`` whose bytes have ``sha256``.

        ``status``: ``matched`` (a record for this name and these bytes), ``changed`` (a
        record for this name, but other bytes), ``no_record`` or ``unreadable``; ``message``:
        a sentence. Only a matched block carries the record's verdict, statistic, reasons and
        parameters (with ``relaxed``: each parameter weaker than the project's).
        """
        folder, name = _split(path)
        results_path = folder + _RESULTS
        doc, problem = self._results(folder)
        base: dict[str, Any] = {"label": LIBRARY_LABEL, "results_json": results_path}
        if problem:
            return {
                **base,
                "status": "unreadable",
                "message": f"The library's record can't be used: {problem}.",
            }
        if doc is None:
            return {
                **base,
                "status": "no_record",
                "message": f"No library record: there is no {results_path} next to this file, "
                "so nothing says which statistic it holds or how it was checked.",
            }
        candidates = []
        for uid, record in doc["results"].items():
            if not isinstance(record, dict):
                continue
            for entry in record.get("files") or []:
                if isinstance(entry, dict) and entry.get("name") == name:
                    candidates.append((str(uid), record, entry))
        if not candidates:
            return {
                **base,
                "status": "no_record",
                "message": f"No library record: {results_path} has no record of {name}, so "
                "nothing says which statistic it holds or how it was checked.",
            }
        recorded = []
        for uid, record, entry in candidates:
            digest = self._recorded_sha256(folder, name, entry)
            recorded.append(digest)
            if digest == sha256:
                return {**base, **self._matched(doc, uid, record, digest)}
        shown = next((d for d in reversed(recorded) if d), None)
        return {
            **base,
            "status": "changed",
            "uid": _short(candidates[-1][0], 100),
            "recorded_sha256": shown,
            "message": (
                f"Changed after the library checked it: the library recorded {name} with "
                + (f"sha256 {shown[:12]}…" if shown else "no checksum")
                + f", but the submitted bytes have sha256 {sha256[:12]}…. The library's "
                "verdict was about other bytes and is not shown as a verdict."
            ),
        }

    def _recorded_sha256(self, folder: str, name: str, entry: Mapping[str, Any]) -> str | None:
        digest = entry.get("sha256")
        if isinstance(digest, str) and _HEX64.match(digest.strip().lower()):
            return digest.strip().lower()
        # ACRO keeps the checksum only in checksums/<name>.txt.
        try:
            data = self._read(f"{folder}{_CHECKSUMS}/{name}.txt")
        except LibraryReadError:
            return None
        if data is None:
            return None
        text = data[:200].decode("ascii", "replace").strip().lower()
        return text if _HEX64.match(text) else None

    def _matched(
        self, doc: Mapping[str, Any], uid: str, record: Mapping[str, Any], digest: str
    ) -> dict[str, Any]:
        havre = record.get("havre") if isinstance(record.get("havre"), dict) else {}
        status = _verdict(record.get("status"))
        own = _verdict(havre.get("verdict"))
        # ACRO's status and Havre's verdict should agree; if not, the worse one counts.
        verdict = worst(status, own) or "review"
        statistic = havre.get("statistic")
        statistic = _short(statistic, 40) if isinstance(statistic, str) and statistic else None
        reasons = havre.get("reasons") if isinstance(havre.get("reasons"), list) else []
        block: dict[str, Any] = {
            "status": "matched",
            "uid": _short(uid, 100),
            "recorded_sha256": digest,
            "type": _short(record.get("type", ""), 40),
            "statistic": statistic,
            "verdict": verdict,
            "summary": _short(havre.get("summary") or record.get("summary", ""), 500),
            "reasons": [_short(r, 500) for r in reasons[:_LIBRARY_REASONS]],
            "reasons_total": havre.get("reasons_total")
            if isinstance(havre.get("reasons_total"), int)
            else len(reasons),
            "exception": _short(record.get("exception", ""), 2000),
            "message": "The library's record matches these bytes (same name and sha256).",
        }
        params_source = havre.get("params")
        if not isinstance(params_source, dict):
            session = doc.get("session") if isinstance(doc.get("session"), dict) else {}
            params_source = session.get("params") if isinstance(session, dict) else None
        if not isinstance(params_source, dict):
            block["params"] = None
            block["params_problem"] = (
                "The library's record does not say which SDC parameters it used."
            )
            block["relaxed"] = []
            return block
        try:
            used = SDCParams.from_mapping(params_source, source="results.json params")
        except SDCParamsError as exc:
            block["params"] = None
            block["params_problem"] = (
                "The SDC parameters in the library's record can't be read: "
                + "; ".join(exc.problems[:5])
                + "."
            )
            block["relaxed"] = []
            return block
        block["params"] = used.as_dict()
        block["relaxed"] = [
            {
                "name": name,
                "library": getattr(used, name),
                "project": getattr(self.project_params, name),
            }
            for name in used.weaker_than(self.project_params)
        ]
        return block


def _parse_results(path: str, data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, f"{path} is not valid JSON"
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        return None, f"{path} is not an ACRO-style results file (no 'results' object)"
    return doc, None


# --------------------------------------------------------------------------------------------
# The badge


def _relaxed_sentence(relaxed: list[Mapping[str, Any]]) -> str:
    parts = [
        f"{r['name']} {json.dumps(r['library'])} instead of the project's "
        f"{json.dumps(r['project'])}"
        for r in relaxed
    ]
    return (
        "The library checked this output with relaxed parameters: "
        + "; ".join(parts)
        + ". Its verdict is not one under the project's rules: a checker must review."
    )


def combine(
    count: Mapping[str, Any] | None,
    library: Mapping[str, Any],
    project_params: SDCParams,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The stored ``sdc`` record and the ``badge`` of a file (see the module's rules).

    ``count``: the service's count-table check (``{"checked": True, "verdict", ...}``, or
    ``{"checked": False, "reason"}``, or None for a file that is no table). ``library``: the
    block :meth:`LibraryRecords.for_file` made. Returns the ``sdc`` record (its ``verdict`` is
    the badge's: old readers of ``check.sdc.verdict`` never see a better verdict than the
    badge) and the badge: ``{"verdict", "text", "summary", "sentences", "verified_by",
    "statistic", "statistic_source", "params", "version"}``.
    """
    status = library.get("status")
    matched = status == "matched"
    lib_verdict = library.get("verdict") if matched else None
    statistic = library.get("statistic") if matched else None
    relaxed = list(library.get("relaxed") or []) if matched else []
    sentences: list[str] = []
    checked = bool(count and count.get("checked"))

    if checked:
        assert count is not None
        count_verdict = _verdict(count.get("verdict")) or "review"
        verdict = count_verdict
        verified_by = "the service's count-table rules"
        if count_verdict == "fail":
            sentences.append(
                "The service's count-table rules fail this table: read as counts, some cells "
                "are small, empty or recoverable (small whole numbers may be counts, whatever "
                "statistic is claimed)."
            )
        if matched and statistic == "count":
            verified_by = (
                "the service's count-table rules; that the numbers are counts is the "
                "researcher's library's claim"
            )
        elif matched:
            verdict = worst(verdict, "review")
            shown = statistic or "not stated"
            sentences.append(
                f"The library's record says this table holds the statistic '{shown}', not "
                "counts; the service can check only counts from a file, so it checked the "
                "numbers as counts only (threshold, zeros, recoverable blanks): the rules for "
                "this statistic (e.g. dominance) need the underlying records: a checker must "
                "review."
            )
        else:
            verdict = worst(verdict, "review")
            sentences.append(
                "The service can't tell which statistic this table holds; it checked it as "
                "counts only (threshold, zeros, recoverable blanks). Sums, means, maxima and "
                "other statistics of whole numbers would need other rules: a checker must "
                f"review. {library.get('message', '')}".rstrip()
            )
    else:
        count_verdict = None
        verdict = None
        verified_by = None
        if matched:
            verdict = "review"
            sentences.append(
                "The service did not check this file itself"
                + (f" ({count.get('reason')})" if count and count.get("reason") else "")
                + "; only the researcher's library's record speaks for it: a checker must "
                "review."
            )
        elif status in ("changed", "unreadable"):
            verdict = "review"

    if status in ("changed", "unreadable") and library.get("message"):
        if checked:
            pass  # the message is already in the sentence above
        else:
            sentences.append(str(library["message"]))
    if matched:
        if lib_verdict in ("fail", "review"):
            verdict = worst(verdict, lib_verdict)
            sentences.append(
                f"The researcher's library recorded '{lib_verdict}' for this output (its "
                "claim; its reasons are listed): the badge is never better than that."
            )
        if relaxed:
            verdict = worst(verdict, "review")
            sentences.append(_relaxed_sentence(relaxed))
        if library.get("params_problem"):
            verdict = worst(verdict, "review")
            sentences.append(str(library["params_problem"]) + " A checker must review.")

    if verdict is None:
        summary = (count or {}).get("reason") or "Not checked automatically."
        text = "SDC: not checked"
    else:
        text = f"SDC: {verdict}"
        if verdict == "pass":
            summary = (count or {}).get("summary") or "pass"
        elif sentences:
            summary = sentences[0]
        else:
            summary = (count or {}).get("summary") or ""
    badge: dict[str, Any] = {
        "version": BADGE_VERSION,
        "verdict": verdict,
        "text": text,
        "summary": summary,
        "sentences": sentences,
        "verified_by": verified_by,
        "count_rules_verdict": count_verdict,
        "statistic": statistic,
        "statistic_source": LIBRARY_LABEL if statistic else None,
        "params": project_params.as_dict(),
        "library_status": status,
    }
    if not checked:
        sdc = dict(count) if count else None
        return sdc, badge
    assert count is not None
    sdc = dict(count)
    sdc["count_rules"] = {
        "verdict": count_verdict,
        "summary": count.get("summary"),
        "statistic": "count",
        "reasons": list(count.get("reasons") or []),
    }
    sdc["verdict"] = verdict
    sdc["summary"] = summary
    sdc["statistic"] = statistic
    sdc["reasons"] = sentences + list(count.get("reasons") or [])
    return sdc, badge


def view_check(check: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A stored ``check`` as checkers see it: one written before badges existed gets one.

    Such a file's count verdict was never set against a library record, so it is at most
    review, with a sentence; its stored ``sdc.verdict`` is capped the same way in the view.
    """
    if not check or "badge" in check:
        return check
    sdc = check.get("sdc")
    if not isinstance(sdc, dict):
        return check
    view = dict(check)
    if sdc.get("checked"):
        verdict = worst(_verdict(sdc.get("verdict")) or "review", "review")
        sentence = (
            "Checked before the service compared files with the library's records: the "
            "service can't tell which statistic this table holds and checked it as counts "
            "only; a checker must review."
        )
        view["sdc"] = {
            **sdc,
            "verdict": verdict,
            "reasons": [sentence, *(sdc.get("reasons") or [])],
            "count_rules": {
                "verdict": sdc.get("verdict"),
                "summary": sdc.get("summary"),
                "reasons": list(sdc.get("reasons") or []),
            },
        }
        view["badge"] = {
            "version": 0,
            "verdict": verdict,
            "text": f"SDC: {verdict}",
            "summary": sentence if verdict != "fail" else sdc.get("summary", ""),
            "sentences": [sentence],
            "verified_by": "the service's count-table rules",
            "count_rules_verdict": sdc.get("verdict"),
            "statistic": None,
            "statistic_source": None,
            "params": sdc.get("params"),
            "library_status": None,
        }
    else:
        view["badge"] = {
            "version": 0,
            "verdict": None,
            "text": "SDC: not checked",
            "summary": sdc.get("reason", ""),
            "sentences": [],
            "verified_by": None,
            "count_rules_verdict": None,
            "statistic": None,
            "statistic_source": None,
            "params": sdc.get("params"),
            "library_status": None,
        }
    return view
