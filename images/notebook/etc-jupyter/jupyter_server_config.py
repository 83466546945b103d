# Havre: notebook server settings that depend on the project, computed when the server starts.
# (Static settings are in jupyter_server_config.json, jupyter_server_config.d/ and labconfig/.)
#
# The server reads its configuration from the image only: the container's environment (set by
# the image and pinned again by the spawner) points Jupyter's user config and data folders at
# empty read-only folders of the image, so nothing in the home configures the server.
#
# * Every route whose handler doesn't say otherwise requires a login
#   (allow_unauthenticated_access); static assets, which Jupyter Server serves to anyone, are
#   checked by the hub's download guard, which also allows only the routes JupyterLab needs.
# * JupyterLab's page doesn't carry the API token: JupyterHub's single-user extension puts the
#   user's OAuth token there, and JupyterLab then sends it as an Authorization header; without
#   it, JupyterLab uses the session cookie and its XSRF token, and the download guard refuses
#   every request that carries a token (a script replaying one from outside the enclave).
# * JupyterLab gets a "Release" menu whose entries open the egress service (output checking)
#   for this project: a new release request (the outputs folder's files are offered there) and
#   the list of requests with their status. JupyterLab reads settings overrides only from its
#   application settings folder, so this file writes them to a folder on the /tmp tmpfs (the
#   root filesystem is read-only) and points JupyterLab at it.
# * The getting-started notebook is copied into the home folder on the first start only (a
#   marker in ~/.havre remembers it, so a researcher who deletes it doesn't get it back).
#
# Runs as the researcher, inside the container, so the settings above are a second layer: the
# download exits are closed by the hub's download guard (docs/architecture.md), which doesn't
# rely on them.
import json
import os
import shutil
from pathlib import Path

c = get_config()  # noqa: F821 - provided by Jupyter's config loader

c.ServerApp.allow_unauthenticated_access = False
c.ServerApp.extra_static_paths = []
c.ServerApp.extra_template_paths = []
c.LabApp.extra_labextensions_path = []
# Notebook trust (signatures of notebooks whose outputs the researcher ran) stays where it was,
# in the home: Jupyter's data folder is read-only now.
_trust = Path(os.environ.get("HOME", "/home/researcher")) / ".local" / "share" / "jupyter"
try:
    _trust.mkdir(parents=True, exist_ok=True)
    c.NotebookNotary.data_dir = str(_trust)
except OSError as _err:  # trust kept in memory only, for this server's life
    print(f"havre: notebook trust not kept: {_err}")
    c.NotebookNotary.db_file = ":memory:"


def _keep_the_token_out_of_the_page() -> None:
    try:
        from jupyterhub.singleuser.extension import JupyterHubIdentityProvider
    except ImportError:  # not started by the hub
        return
    original = JupyterHubIdentityProvider.page_config_hook
    if getattr(original, "havre_no_token", False):
        return

    def page_config_hook(self: object, handler: object, page_config: dict) -> dict:
        page_config = original(self, handler, page_config)
        page_config["token"] = ""
        return page_config

    page_config_hook.havre_no_token = True
    JupyterHubIdentityProvider.page_config_hook = page_config_hook


_keep_the_token_out_of_the_page()

_project = os.environ.get("HAVRE_PROJECT", "")
_hub_base = os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/")
_egress = f"{_hub_base}/services/egress/"


def _release_menu() -> dict:
    items = []
    if _project:
        items.append(
            {
                "command": "help:open",
                "args": {
                    "url": f"{_egress}projects/{_project}/new",
                    "text": f"Ask for a Release of Outputs ({_project})…",
                    "newBrowserTab": True,
                },
                "rank": 1,
            }
        )
    items.append(
        {
            "command": "help:open",
            "args": {
                "url": _egress,
                "text": "My Release Requests and Their Status",
                "newBrowserTab": True,
            },
            "rank": 2,
        }
    )
    return {"id": "jp-mainmenu-havre-release", "label": "Release", "rank": 6, "items": items}


_settings = Path("/tmp/havre-lab/settings")
try:
    _settings.mkdir(parents=True, exist_ok=True)
    (_settings / "overrides.json").write_text(
        json.dumps(
            {
                "@jupyterlab/mainmenu-extension:plugin": {"menus": [_release_menu()]},
                # no "get notified about Jupyter news?" prompt: there is no way out to fetch it
                "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"},
                # open a notebook with its own kernel, without asking which one
                "@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True},
            }
        )
    )
    c.LabApp.app_settings_dir = str(_settings)
except OSError as _err:  # no menu rather than no server
    print(f"havre: no Release menu: {_err}")

_example = Path("/opt/havre/examples/getting-started.ipynb")
_home = Path(os.environ.get("HOME", "/home/researcher"))
_marker = _home / ".havre" / "getting-started-copied"
try:
    if _example.exists() and not _marker.exists():
        _target = _home / _example.name
        if not _target.exists():
            shutil.copyfile(_example, _target)
        _marker.parent.mkdir(exist_ok=True)
        _marker.touch()
except OSError as _err:
    print(f"havre: getting-started notebook not copied: {_err}")
