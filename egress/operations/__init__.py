"""The egress service's operations, one module per family, composed by
:class:`egress.operations.facade.EgressService`. Each operation reads: load -> policy -> store ->
audit event (see :mod:`egress.operations.facade`)."""
