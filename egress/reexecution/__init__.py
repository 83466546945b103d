"""Trusted re-execution: the engine (run a notebook in a hardened container, compare its
outputs), the jobs folder the service and the runner share, the runner, the service's side."""
