"""The ports Havre's services listen on inside their containers.

A module of its own, with no imports: the host's command line (``havre``, the stack launcher)
needs these numbers without loading the hub's wiring (``spawner.hub_config`` imports
JupyterHub, which the command line's install does not have).
"""

HUB_PORT = 8081
PROXY_PORT = 8000
EGRESS_PORT = 8090
#: the egress service's metrics-only port (``/metrics``), published when
#: ``monitoring.publish`` is set (docs/sysadmin/operations.md)
EGRESS_METRICS_PORT = 9190
#: the download guard, on the hub container's loopback address
GUARD_PORT = 8082
