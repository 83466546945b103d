"""JupyterHub configuration for a Havre enclave.

Thin on purpose: everything is read from the enclave config file ($HAVRE_CONFIG) and wired in
spawner/hub_config.py, so the hub, the egress service and Ansible share one source of truth.
"""

from spawner.hub_config import configure_hub

c = get_config()  # noqa: F821 (provided by JupyterHub)
configure_hub(c)
