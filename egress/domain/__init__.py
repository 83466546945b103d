"""The egress service's domain rules: the request workflow, who may do and see what, and the
service's refusals that are not policy decisions (:mod:`.errors`).

Pure: no database, no web framework (an import-linter contract keeps it so)."""
