"""The notebook image carries only what researchers need, proven inside the built images.

The notebook image installs the researcher distribution (``havre-researcher``,
images/researcher/pyproject.toml): ``havre.safe``, ``havre.sdc``, ``havre.enclave`` and the
deprecated ``egress.safe`` alias. The egress service (web, operations, audit), its signing
code, the spawner, the identity provider, the spawn broker and the host CLI must not be in a
researcher's container: a researcher could otherwise read their code for weaknesses, or run
it. A probe runs in a container of the real image (no network, hardened like every container
of an enclave: :func:`havre.enclave.hardening.container_hardening`), imports each module, and
walks the whole filesystem for their files. The control: the same probe in the egress image
finds every one of them importable and on disk, so an absence in the notebook image is the
packaging's doing, not a broken probe.
"""

from __future__ import annotations

import json

import pytest

from havre.enclave.hardening import container_hardening
from havre.host import layout
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE

pytestmark = pytest.mark.docker

#: what a researcher's container must not hold: module -> its file or folder in site-packages
ABSENT = {
    "egress.web": "egress/web",
    "egress.operations": "egress/operations",
    "egress.audit": "egress/audit",
    "egress.files": "egress/files",
    "egress.store": "egress/store",
    "egress.notifications": "egress/notifications",
    "egress.service": "egress/service.py",
    "egress.cli": "egress/cli.py",
    "spawner": "spawner",
    "havre.idp": "havre/idp",
    "havre.broker": "havre/broker",
    "havre.host": "havre/host",
}
#: what researchers' notebooks import
PRESENT = ("havre.safe", "havre.sdc", "havre.enclave.config", "havre.enclave.outputs_folder")

PROBE = r"""
import importlib, json, os, sys, sysconfig, warnings

absent = json.loads(sys.argv[1])
present = json.loads(sys.argv[2])

def try_import(name):
    try:
        importlib.import_module(name)
        return "ok"
    except ModuleNotFoundError as err:  # which module: the one asked for, or a dependency
        return f"ModuleNotFoundError: {err.name}"
    except Exception as err:
        return type(err).__name__

imports = {name: try_import(name) for name in [*present, *absent]}

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import egress.safe
import havre.safe
alias = {
    "same_module": egress.safe is havre.safe,
    "warned": [str(w.message) for w in caught if w.category is DeprecationWarning],
}

# every file on the root filesystem whose path ends in one of the packages' paths
wanted = [("/" + path) for path in absent.values()]
found = {path: [] for path in absent.values()}
for root, dirs, files in os.walk("/", topdown=True):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in dirs + files:
        full = os.path.join(root, name)
        for path in absent.values():
            if full.endswith("/" + path):
                found[path].append(full)

site = sysconfig.get_paths()["purelib"]
egress_files = sorted(
    os.path.relpath(os.path.join(r, f), site)
    for r, _d, fs in os.walk(os.path.join(site, "egress"))
    for f in fs
    if not f.endswith(".pyc")
)
dists = sorted(
    d.split("-")[0] for d in os.listdir(site) if d.endswith(".dist-info") and d.startswith("havre")
)
print("PROBE-RESULT " + json.dumps({
    "imports": imports, "alias": alias, "found": found, "egress_files": egress_files,
    "dists": dists,
}))
"""


def probe(docker_client, image: str) -> dict:
    """Run the probe in a throw-away container of ``image``: no network, the enclave's base
    hardening, the image's own user."""
    out = docker_client.containers.run(
        image,
        ["python3", "-c", PROBE, json.dumps(ABSENT), json.dumps(list(PRESENT))],
        network_mode="none",
        remove=True,
        labels={"havre.test.image-probe": "1"},
        **container_hardening(tmp_size="16m", pids=128),
    )
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("PROBE-RESULT "):
            return json.loads(line.removeprefix("PROBE-RESULT "))
    raise AssertionError(f"the probe printed no result: {out[-2000:]!r}")


@pytest.fixture(scope="module")
def notebook(docker_client) -> dict:
    return probe(docker_client, DEFAULT_NOTEBOOK_IMAGE)


@pytest.fixture(scope="module")
def egress(docker_client) -> dict:
    image = layout.StackOptions().egress_image
    try:
        docker_client.images.get(image)
    except Exception:
        pytest.skip(f"needs image {image}: build it with `bash images/build.sh --only egress`")
    return probe(docker_client, image)


def test_researchers_library_imports_in_the_notebook_image(notebook):
    for name in PRESENT:
        assert notebook["imports"][name] == "ok", name
    assert notebook["dists"] == ["havre_researcher"]  # not Havre's whole distribution


def test_egress_safe_alias_works_and_warns(notebook):
    assert notebook["alias"]["same_module"] is True
    assert any("havre.safe" in message for message in notebook["alias"]["warned"])
    # the alias is all of egress that ships: no egress/__init__.py, nothing else
    assert notebook["egress_files"] == ["egress/safe/__init__.py"]


@pytest.mark.parametrize("module", sorted(ABSENT))
def test_service_code_cannot_be_imported_in_the_notebook_image(notebook, egress, module):
    # the module itself is missing (not a dependency it needs)
    assert notebook["imports"][module] == f"ModuleNotFoundError: {module}"
    # control: the probe imports it where it is installed
    assert egress["imports"][module] == "ok"


@pytest.mark.parametrize("module", sorted(ABSENT))
def test_service_code_is_not_on_disk_in_the_notebook_image(notebook, egress, module):
    path = ABSENT[module]
    assert notebook["found"][path] == []
    # control: the same walk finds it in the egress image
    assert any("site-packages/" + path in found for found in egress["found"][path])


def test_the_notebook_image_has_no_setuid_or_setgid_file(docker_client):
    """A setuid-root file would give uid 0 inside a server where no-new-privileges can't be set
    (a Swarm service on API 1.41). The image has none; control: the same search, as root in a
    container of the image, finds a file planted with the bit."""
    out = docker_client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE,
        [
            "sh",
            "-c",
            "cp /bin/true /usr/local/bin/planted && chmod u+s /usr/local/bin/planted && "
            "find / -xdev -perm /6000 -type f",
        ],
        user="0",
        network_mode="none",
        remove=True,
        labels={"havre.test.image-probe": "1"},
    )
    assert out.decode().split() == ["/usr/local/bin/planted"]


#: The notebook image's entry point imports JupyterHub's single-user server (Jupyter Server and
#: all) without the hub's database layer; the same probe with the plain imports is the control.
LEAN_PROBE = r"""
import json, sys
from havre.notebook import singleuser
singleuser.import_single_user(lean=sys.argv[1] == "lean")
import jupyterhub.singleuser.extension as extension
print("PROBE-RESULT " + json.dumps({
    "kept_out_loaded": [
        m for m in singleuser.KEPT_OUT
        if any(k == m or k.startswith(m + ".") for k in sys.modules)
    ],
    "stand_ins_left": [k for k, v in sys.modules.items() if isinstance(v, singleuser._StandIn)],
    "extension": extension.JupyterHubSingleUser.name,
    "used": singleuser.stand_ins_used(),
}))
"""


def lean_probe(docker_client, mode: str) -> dict:
    out = docker_client.containers.run(
        DEFAULT_NOTEBOOK_IMAGE,
        ["python3", "-c", LEAN_PROBE, mode],
        network_mode="none",
        remove=True,
        labels={"havre.test.image-probe": "1"},
        **container_hardening(tmp_size="16m", pids=128),
    )
    text = out.decode(errors="replace")
    assert "PROBE-RESULT " in text, text[-2000:]
    return json.loads(text.split("PROBE-RESULT ", 1)[1])


def test_the_image_runs_the_single_user_server_without_the_hub_database_layer(docker_client):
    image = docker_client.images.get(DEFAULT_NOTEBOOK_IMAGE)
    assert image.attrs["Config"]["Cmd"] == ["havre-singleuser"]
    lean = lean_probe(docker_client, "lean")
    assert lean == {
        "kept_out_loaded": [],
        "stand_ins_left": [],
        "extension": "jupyterhub-singleuser",
        "used": [],
    }
    # control: the same image and probe, JupyterHub's plain imports
    plain = lean_probe(docker_client, "plain")
    assert plain["kept_out_loaded"] == [
        "sqlalchemy",
        "alembic",
        "jupyterhub.orm",
        "jupyterhub.handlers",
    ]
