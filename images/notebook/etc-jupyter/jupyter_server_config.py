# Havre: notebook server settings that depend on the project, computed when the server starts.
# (Static settings are in jupyter_server_config.json, jupyter_server_config.d/ and labconfig/.)
#
# * JupyterLab gets a "Release" menu whose entries open the egress service (output checking)
#   for this project: a new release request (the outputs folder's files are offered there) and
#   the list of requests with their status. JupyterLab reads settings overrides only from its
#   application settings folder, so this file writes them to a folder on the /tmp tmpfs (the
#   root filesystem is read-only) and points JupyterLab at it.
# * The getting-started notebook is copied into the home folder on the first start only (a
#   marker in ~/.havre remembers it, so a researcher who deletes it doesn't get it back).
#
# Runs as the researcher, inside the container; nothing here is a security control (the
# download exits are closed by the hub's download guard, see docs/architecture.md).
import json
import os
import shutil
from pathlib import Path

c = get_config()  # noqa: F821 - provided by Jupyter's config loader

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
