"""The shared kernel of the enclave: the config model and its loading (:mod:`.config`,
:mod:`.live`), networks, ports, identities, container hardening, and the folder and
break-glass contracts the hub, the egress service and the host share. It imports nothing
else of Havre."""
