"""The spawn broker: the only holder of the Docker socket in an enclave.

The Docker socket is root on the host: the hub, reachable from every browser, must not hold it.

* :mod:`havre.broker.policy` (pure): checks a caller's request and builds, from the enclave
  config alone, the full specification of the container it may start;
* :mod:`havre.broker.service`: the HTTP server on a Unix socket (``havre-broker``), which
  authenticates callers, applies the policy, drives Docker and audits every call;
* :mod:`havre.broker.client`: what the hub (``ProjectSpawner``) and the re-execution runner
  call.

See docs/sysadmin/broker.md and docs/architecture.md ("Trust boundaries").
"""
