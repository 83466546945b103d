"""Havre: what the hub (``spawner``) and the egress service (``egress``) share, and every other
deployable: ``enclave`` (the shared kernel: config model and loading, networks, ports,
identities, hardening, the outputs and break-glass contracts), ``sdc`` (the disclosure-control
engine), ``safe`` (the researcher's library), ``idp`` (the embedded identity provider),
``broker`` (the spawn broker) and ``host`` (the ``havre`` CLI, stack launcher, demo data)."""

__version__ = "0.1.0"
