"""The egress service's operations, one module per family; :class:`egress.core.EgressService`
composes them. Each operation reads: load -> policy -> store -> audit event (see
:mod:`egress.core`)."""
