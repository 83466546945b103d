"""Issue #20's "one look": the hub's pages, the egress service's and the sign-in pages carry
one stylesheet and one header, and say "release request" for the same thing.

Each service serves its own copy of ``style/havre.css`` (so no page depends on another service
being up): the copies must be the same bytes as the source (``scripts/sync_style.py`` makes
them; ``images/build.sh`` runs it on the tree it builds the wheel from). The pages are rendered
by the real things: the provider on loopback, JupyterHub's own templates with Havre's (the
egress service's pages: tests/unit/egress/test_web_day.py). The browser sees them all in
tests/e2e/test_day_browser.py (axe-core).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import requests

from havre.enclave.config import parse_enclave_config
from scripts import sync_style
from spawner.hub_pages import HUB_STYLESHEET, template_vars
from tests.unit import test_oidc_provider as harness
from tests.unit.test_hub_pages import CONFIG, env, render

seeded = harness.seeded
provider_factory = harness.provider_factory
idp = harness.idp
env = env  # the hub's templates, as JupyterHub loads them

REPO = Path(__file__).resolve().parents[2]
SOURCE = (REPO / "style" / "havre.css").read_text(encoding="utf-8")
#: the header every page shares: the brand, then the pages' links, the signed-in user
BRAND = re.compile(r'<header role="banner">\s*<(a|span) class="brand"[^>]*><strong>Havre</strong>')


def test_every_service_serves_a_copy_identical_to_the_one_source():
    assert sync_style.stale() == [], "python scripts/sync_style.py"
    for copy in sync_style.COPIES:
        assert (REPO / copy).read_text(encoding="utf-8") == SOURCE
    # the copies are the package data the images install
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'spawner = ["templates/hub/*.html", "static/*.css"]' in pyproject
    assert '"havre.idp" = ["templates/*.html", "static/*.css"]' in pyproject
    assert "scripts/sync_style.py" in (REPO / "images" / "build.sh").read_text()


def test_a_changed_copy_is_found_and_the_build_s_copy_step_restores_it(tmp_path):
    tree = tmp_path / "tree"
    for part in ("style/havre.css", "scripts/sync_style.py", *sync_style.COPIES):
        (tree / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / part, tree / part)
    assert sync_style.stale(tree) == []  # control
    (tree / "spawner/static/havre.css").write_text("body{color:red}")
    assert sync_style.stale(tree) == ["spawner/static/havre.css"]
    script = str(tree / "scripts" / "sync_style.py")
    check = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert check.returncode == 1 and "spawner/static/havre.css differs" in check.stdout
    subprocess.run([sys.executable, script], check=True)  # what images/build.sh runs
    assert sync_style.stale(tree) == []


def hub_user(name: str = "alice") -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        escaped_name=name,
        groups=[],
        spawners={},
        spawner=SimpleNamespace(options_form=None),
        server_url=lambda slug: f"/user/{name}/{slug}/",
    )


def test_the_hub_s_pages_inline_their_copy_and_share_the_header(env):
    enclave = parse_enclave_config(CONFIG, source="unit")
    user = hub_user()
    values = {key: value(user) for key, value in template_vars(enclave).items()}
    services = [SimpleNamespace(name="egress", href="/services/egress/")]
    home = render(env, "home.html", user=user, services=services, **values)
    assert f"<style>{HUB_STYLESHEET.read_text()}</style>" in home
    assert BRAND.search(home), home[:2000]
    header = re.search(r'<header role="banner">.*?</header>', home, re.S).group(0)
    assert 'id="nav-release-requests"' in header and ">Release requests<" in header
    assert ">alice<" in header and 'id="logout"' in header
    assert "navbar" not in home.split("<main", 1)[0].split("<body", 1)[1]  # Bootstrap's is gone
    assert ">Release requests</a>" in home.split("</header>", 1)[1]  # "release request", once
    assert "Output checking</a>" not in home
    # a refusal (403) of the hub looks like its other pages
    refused = render(
        env, "error.html", user=user, status_code=403, status_message="Forbidden", **values
    )
    assert BRAND.search(refused) and f"<style>{SOURCE}</style>" in refused


def test_the_sign_in_pages_inline_their_copy_under_the_nonce_and_share_the_header(idp):
    browser = requests.Session()
    page = idp.authorize(browser, idp.authorize_params())
    nonce = re.search(r"style-src 'nonce-([^']+)'", page.headers["Content-Security-Policy"])[1]
    assert f'<style nonce="{nonce}">{SOURCE}</style>' in page.text
    assert BRAND.search(page.text) and '<main class="signin">' in page.text
    wrong = idp.submit_login(browser, page, "alice", "not her password")
    assert 'id="login-error"' in wrong.text  # the sign-in error page: the same look
    assert f"{SOURCE}</style>" in wrong.text and BRAND.search(wrong.text)
