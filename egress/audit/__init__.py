"""The egress service's audit log: :mod:`.chain` (the hash chain, the file log, verification,
export and the ``python -m egress.audit`` command) and :mod:`.db_log` (the chain kept in the
service's database)."""
