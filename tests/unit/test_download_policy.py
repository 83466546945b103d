"""The download guard's policy: which notebook-server routes hand files to a browser.

The integration tests attack the real guard in front of a real server
(tests/integration/test_download_guard.py); these cover the spellings.
"""

from __future__ import annotations

import pytest

from spawner.download_policy import (
    CONTENT_SECURITY_POLICY,
    normalised_path,
    request_refusal,
    response_refusal,
)


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        ("files/outputs/t.csv", "", "route-files"),
        ("files/outputs/t.csv", "download=1", "route-files"),
        ("files", "", "route-files"),
        ("FILES/t.csv", "", "route-files"),
        ("%66iles/t.csv", "", "route-files"),
        ("%2566iles/t.csv", "", "route-files"),  # encoded twice
        ("/files/t.csv", "", "route-files"),  # a doubled slash after the prefix
        ("lab/../files/t.csv", "", "route-files"),
        ("./files/t.csv", "", "route-files"),
        ("nbconvert/html/analysis.ipynb", "download=true", "route-nbconvert"),
        ("nbconvert/script/analysis.ipynb", "", "route-nbconvert"),
        ("view/outputs/figure.html", "", "route-view"),
        ("api/contents/outputs/t.csv", "download=1", "download-parameter"),
        ("api/contents/outputs/t.csv", "content=1&Download=0", "download-parameter"),
        ("lab", "download", "download-parameter"),
        ("files%5ct.csv", "", "odd-path"),
        ("api/contents/a%00b", "", "odd-path"),
        ("%25252566iles/t.csv", "", "odd-path"),  # more decoding rounds than any client uses
    ],
)
def test_download_routes_are_refused_however_spelt(path, query, code):
    refusal = request_refusal(path, query)
    assert refusal is not None and refusal.code == code
    assert "release" in refusal.sentence


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("", ""),
        ("lab", ""),
        ("lab/tree/getting-started.ipynb", ""),
        ("lab/api/settings/@jupyterlab/mainmenu-extension:plugin", ""),
        ("api/contents/outputs/t.csv", "content=1&format=text&type=file"),
        ("api/contents/files/t.csv", ""),  # a folder named "files" in the home
        ("api/contents/outputs", "content=1"),
        ("api/kernels/0f2c/channels", "session_id=x"),
        ("api/terminals/websocket/1", ""),
        ("api/nbconvert", ""),  # the list of formats, no file
        ("static/lab/main.js", "v=1"),
        ("api/contents/outputs/downloads.csv", ""),  # "download" in a name is fine
    ],
)
def test_what_jupyterlab_needs_passes(path, query):
    assert request_refusal(path, query) is None


def test_an_answer_with_content_disposition_is_refused():
    assert response_refusal([("Content-Type", "text/csv")]) is None
    refusal = response_refusal([("content-disposition", 'attachment; filename="t.csv"')])
    assert refusal is not None and refusal.code == "attachment"


def test_normalised_path_undoes_dot_segments_and_slashes():
    assert normalised_path("a//b/./c/../d/") == "/a/b/d/"
    assert normalised_path("../../etc") == "/etc"


def test_scripts_may_talk_to_the_enclave_only():
    directives = dict(
        item.strip().split(" ", 1) for item in CONTENT_SECURITY_POLICY.split(";") if item.strip()
    )
    assert directives["connect-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert directives["form-action"] == "'self'"
    assert "http" not in CONTENT_SECURITY_POLICY and "*" not in CONTENT_SECURITY_POLICY
