"""The hub's pages, Havre's way: a project list instead of "named servers", clear refusals.

Havre's templates (``spawner/templates/hub/``) override six of JupyterHub's:

* ``page.html``: JupyterHub's page with Havre's one look (the stylesheet every service serves,
  its copy :data:`HUB_STYLESHEET` inlined, and the header the egress and sign-in pages share),
  without the "Token" link (nobody in Havre may create API tokens: see ``USER_SCOPES`` in
  :mod:`spawner.hub_config`);
* ``token.html``: what ``/hub/token`` says instead of a token form that could only fail;

* ``home.html``: the signed-in user's projects only (title, server state, start / open / stop),
  and a link to output checking;
* ``spawn_pending.html``: which project is starting; the progress messages come from
  :meth:`spawner.project_spawner.ProjectSpawner.progress`;
* ``error.html`` and ``not_running.html``: a page that says what happened and what to do for a
  refused or failed start: not a member of the project, the project's image missing or not
  allowed, the enclave's server limit reached (``havre_reasons.html``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from markupsafe import Markup

from havre.enclave.config import EnclaveConfig, Project

#: where Havre's hub templates are (shipped as package data)
HUB_TEMPLATES = Path(__file__).resolve().parent / "templates" / "hub"
#: the hub's copy of Havre's one stylesheet (``style/havre.css``, copied by images/build.sh)
HUB_STYLESHEET = Path(__file__).resolve().parent / "static" / "havre.css"


def user_projects(enclave: EnclaveConfig, user: Any) -> list[Project]:
    """The projects ``user`` (the hub's user object) belongs to, by title."""
    if user is None:
        return []
    groups = [group.name for group in getattr(user, "groups", None) or []]
    return sorted(
        (p for slug, p in enclave.projects.items() if enclave.is_member(user.name, slug, groups)),
        key=lambda project: (project.title.lower(), project.slug),
    )


def template_vars(enclave: EnclaveConfig) -> dict[str, Callable[[Any], Any]]:
    """JupyterHub template variables.

    JupyterHub calls each with the signed-in user and puts the result in the page:
    ``havre_projects`` is that user's projects; ``havre_project_titles`` a function that gives
    the project titles of a server's owner (the spawn page's ``user``); ``havre_css`` the
    stylesheet, read once here (the hub's own copy: no page of the hub needs another service).
    """
    css = Markup(HUB_STYLESHEET.read_text(encoding="utf-8"))  # Havre's own file, not input

    def titles(user: Any) -> dict[str, str]:
        return {project.slug: project.title for project in user_projects(enclave, user)}

    return {
        "havre_projects": lambda user: user_projects(enclave, user),
        # a function in the page: the spawn page's user is the server's owner
        "havre_project_titles": lambda _user: lambda owner: titles(owner),
        "havre_css": lambda _user: css,
    }


def configure_pages(c: Any, enclave: EnclaveConfig) -> None:
    """Use Havre's hub templates and give them the enclave's projects."""
    c.JupyterHub.template_paths = [str(HUB_TEMPLATES)]
    c.JupyterHub.template_vars = template_vars(enclave)
