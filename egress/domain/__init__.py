"""The egress service's domain rules: the request workflow and who may do and see what.

Pure: no database, no web framework (an import-linter contract keeps it so)."""
