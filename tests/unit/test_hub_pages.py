"""Havre's hub pages, rendered by JupyterHub's own templates and Jinja setup.

The browser tests see the project list and the "not a member" page in a running hub
(tests/e2e/test_lab_browser.py); the refusals that a test enclave can't easily provoke (an
image missing from the host, the enclave's server limit) are rendered here.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import jupyterhub
import pytest
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from jupyterhub.spawner import SpawnException
from tornado import web

from havre.enclave.config import parse_enclave_config
from spawner.hub_pages import HUB_TEMPLATES, template_vars, user_projects


def jupyterhub_templates() -> str:
    """Where JupyterHub's own templates are installed (what app.py's data_files_path finds)."""
    here = os.path.dirname(jupyterhub.__file__)
    for prefix in (os.path.join(here, ".."), os.path.join(here, "..", "..", "..", "..")):
        path = os.path.abspath(os.path.join(prefix, "share", "jupyterhub", "templates"))
        if os.path.isfile(os.path.join(path, "page.html")):
            return path
    pytest.skip("JupyterHub's templates are not installed next to the package")


@pytest.fixture(scope="module")
def env() -> Environment:
    default = jupyterhub_templates()
    # as JupyterHub's init_tornado_settings builds it, with Havre's template_paths first
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([default])}, "/"),
            FileSystemLoader([str(HUB_TEMPLATES), default]),
        ]
    )
    return Environment(loader=loader, autoescape=True)


def render(env: Environment, name: str, **ns) -> str:
    base = dict(
        base_url="/hub/",
        prefix="/",
        static_url=lambda path, **_kwargs: f"/hub/static/{path}",
        user=None,
        services=[],
        parsed_scopes=set(),
        expanded_scopes=set(),
        xsrf="x",
        xsrf_token="x",
        version_hash="",
        login_url="/hub/login",
        logout_url="/hub/logout",
    )
    base.update(ns)
    return env.get_template(name).render(**base)


@pytest.mark.parametrize(
    ("exception", "status", "element", "words"),
    [
        (
            SpawnException("bob is not a member", reason="not-member", status_code=403),
            403,
            "havre-not-member",
            "You are not a member of this project",
        ),
        (
            SpawnException("Image x is not on this host", reason="image-missing", status_code=503),
            503,
            "havre-image-missing",
            "This project's software image is missing",
        ),
        (
            SpawnException("Image x is not allowed", reason="image", status_code=403),
            403,
            "havre-image-refused",
            "is not allowed",
        ),
        (
            web.HTTPError(429, "Active user limit exceeded. Try again in a few minutes."),
            429,
            "havre-limit",
            "Limit reached: too many servers right now",
        ),
    ],
)
def test_refused_spawns_get_a_page_that_says_why_and_what_to_do(
    env, exception, status, element, words
):
    html = render(
        env,
        "error.html",
        status_code=status,
        status_message="",
        message="detail",
        exception=exception,
    )
    assert f'id="{element}"' in html
    assert words in html
    assert "Back to your projects" in html


@pytest.mark.parametrize("status", [502, 503, 504])
def test_the_proxy_s_error_page_for_a_stopped_service_says_what_to_do(env, status):
    # exactly the namespace JupyterHub's ProxyErrorHandler gives: no ``exception``, no message
    html = render(
        env,
        "error.html",
        status_code=status,
        status_message="Service Unavailable",
        message_html="Your server appears to be down.",
        logo_url="/hub/home",
    )
    assert 'id="havre-unavailable"' in html and "Not answering right now" in html
    assert "Back to your projects" in html


def test_other_errors_keep_jupyterhub_s_page(env):
    html = render(
        env,
        "error.html",
        status_code=404,
        status_message="Not Found",
        message="No such page",
        exception=web.HTTPError(404),
    )
    assert "havre-refusal" not in html and "No such page" in html


def test_a_failed_spawn_page_explains_and_offers_no_retry_for_a_non_member(env):
    exception = SpawnException("carol is not a member", reason="not-member", status_code=403)
    html = render(
        env,
        "not_running.html",
        failed=True,
        failed_message="carol is not a member",
        exception=exception,
        server_name="cardio",
        spawn_url="/hub/spawn/carol/cardio",
    )
    assert 'id="havre-not-member"' in html
    assert "Relaunch" not in html  # retrying can't help
    assert "Your projects" in html


CONFIG = {
    "enclave": {"name": "unit", "state_dir": "/srv/unit"},
    "images": {"allowed": ["havre/notebook:0.1.0"], "default": "havre/notebook:0.1.0"},
    "projects": {
        "cardio": {"title": "Cardio", "members": ["alice", "carol"]},
        "diabetes": {"title": "Diabetes", "groups": ["project-diabetes"]},
    },
    "output_checkers": ["olivia"],
}


@pytest.mark.parametrize(
    ("name", "groups", "expected"),
    [
        ("alice", [], ["cardio"]),
        ("carol", ["project-diabetes"], ["cardio", "diabetes"]),
        ("bob", ["project-diabetes"], ["diabetes"]),
        ("olivia", [], []),  # a checker is in no project
    ],
)
def test_the_project_list_holds_the_user_s_projects_only(env, name, groups, expected):
    enclave = parse_enclave_config(CONFIG, source="unit")
    user = SimpleNamespace(
        name=name,
        escaped_name=name,
        groups=[SimpleNamespace(name=g) for g in groups],
        spawners={},
        spawner=SimpleNamespace(options_form=None),
        server_url=lambda slug, _name=name: f"/user/{_name}/{slug}/",
    )
    assert [p.slug for p in user_projects(enclave, user)] == expected
    values = {key: value(user) for key, value in template_vars(enclave).items()}
    html = render(env, "home.html", user=user, **values)
    for slug in ("cardio", "diabetes"):
        assert (f'id="project-{slug}"' in html) == (slug in expected)
    if not expected:
        assert 'id="havre-no-projects"' in html


def test_start_and_open_lead_lab_projects_to_jupyterlab_and_desktops_to_their_root(env):
    """Start and Open skip the server root's redirect to lab (one hop less through the proxy
    and the guard, issue #21); a pixels-only project's root is its desktop, and ``lab`` is
    refused there, so its links stay at the root (control)."""
    from urllib.parse import parse_qs, urlsplit

    config = {**CONFIG, "projects": {**CONFIG["projects"]}}
    config["projects"]["diabetes"] = {**CONFIG["projects"]["diabetes"], "access": "desktop"}
    config["images"] = {**CONFIG["images"], "desktop": "havre/desktop:0.1.0"}
    enclave = parse_enclave_config(config, source="unit")
    user = SimpleNamespace(
        name="carol",
        escaped_name="carol",
        groups=[SimpleNamespace(name="project-diabetes")],
        spawners={},
        spawner=SimpleNamespace(options_form=None),
        server_url=lambda slug: f"/user/carol/{slug}/",
    )
    values = {key: value(user) for key, value in template_vars(enclave).items()}
    html = render(env, "home.html", user=user, **values)

    def href(element_id: str) -> str:
        rest = html.split(f'id="{element_id}"', 1)[1]
        return rest.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")

    start = urlsplit(href("start-cardio"))
    assert start.path == "/hub/spawn/carol/cardio"
    assert parse_qs(start.query) == {"next": ["/user/carol/cardio/lab"]}
    # encoded in full: a page waiting for ".../user/carol/cardio/lab" doesn't match the link
    assert "/user/" not in start.query
    assert href("open-cardio") == "/user/carol/cardio/lab"
    assert href("start-diabetes") == "/hub/spawn/carol/diabetes"
    assert href("open-diabetes") == "/user/carol/diabetes/"


@pytest.mark.parametrize("admin", [False, True])
def test_no_page_links_to_the_token_page_and_the_token_page_explains(env, admin):
    # Nobody in Havre may create API tokens; JupyterHub's navigation offered a "Token" page
    # whose form then failed with "User ... not found" (issue #20). The live hub is checked in
    # tests/integration/test_researcher_environment.py.
    enclave = parse_enclave_config(CONFIG, source="unit")
    user = SimpleNamespace(
        name="alice",
        escaped_name="alice",
        groups=[],
        spawners={},
        spawner=SimpleNamespace(options_form=None),
        server_url=lambda slug: f"/user/alice/{slug}/",
    )
    values = {key: value(user) for key, value in template_vars(enclave).items()}
    scopes = {"admin-ui"} if admin else set()
    home = render(env, "home.html", user=user, parsed_scopes=scopes, **values)
    assert 'href="/hub/home"' in home  # control: the navigation is there
    assert 'href="/hub/token"' not in home
    assert ('href="/hub/admin"' in home) == admin
    token = render(
        env, "token.html", user=user, parsed_scopes=scopes, api_tokens=[], oauth_clients=[]
    )
    assert 'id="havre-no-tokens"' in token and "does not give API tokens" in token
    assert "request-token-form" not in token and 'href="/hub/token"' not in token
