"""The enclave the session deployed on the test cluster with cluster.yml + site.yml
(``tests/cluster/deploy.py``, ``conftest.cluster_site``): what the playbooks left on each host.

That a member's server then lands on the labelled worker, becomes ready through the hub and
proxy on the manager and reads the operator's file in ``/data`` is
``test_swarm_servers.py::test_a_members_server_lands_on_the_worker_holding_its_data``, on this
same deployment.
"""

from __future__ import annotations

import stat

from havre.enclave.identities import load_table_any, table_path
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from tests.cluster.conftest import EGRESS_IMAGE, HUB_IMAGE, ClusterEnclave


def test_site_yml_renders_the_cluster_section_and_loads_the_notebook_image_on_workers(
    cluster_site, cluster_enclave: ClusterEnclave
):
    site, deploy = cluster_site
    config = cluster_enclave.config
    assert config.cluster is not None
    assert config.cluster.manager == site.nodes["n1"].url
    assert config.cluster.placement == {"diabetes": "havre.data.diabetes=true"}
    assert not config.cluster.overlay_encrypted  # the test cluster's, with the flag
    notebook = site.image_id("n1", DEFAULT_NOTEBOOK_IMAGE)
    for worker in ("n2", "n3"):
        assert site.image_id(worker, DEFAULT_NOTEBOOK_IMAGE) == notebook, worker
        # the hub and egress images stay on the manager (control: there they are)
        assert site.image_id(worker, HUB_IMAGE) is None
        assert site.image_id(worker, EGRESS_IMAGE) is None
    assert site.image_id("n1", HUB_IMAGE) and site.image_id("n1", EGRESS_IMAGE)
    loaded = [line for line in deploy.changed_tasks() if "Load the notebook images" in line]
    assert len(loaded) == 2, loaded  # one per worker, reported as a change


def test_data_folders_on_the_labelled_workers_have_the_projects_group(cluster_site):
    """The folders after the whole site.yml. The three "hosts" share this machine's disk, so
    which host made a folder can't be told apart here: that the worker play makes exactly its
    projects' folders is tests/unit/test_ansible_cluster_site.py's."""
    site, deploy = cluster_site
    assert "Create the data folders of the projects this worker holds" in deploy.output
    gids = load_table_any(table_path(site.state)).projects
    cardio = site.state / "projects" / "cardio" / "data"
    for path, gid, mode in (
        (cardio, gids["cardio"], 0o750),
        (cardio / "visits.csv", gids["cardio"], 0o640),
        (site.diabetes_data, gids["diabetes"], 0o750),
    ):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, mode), path
