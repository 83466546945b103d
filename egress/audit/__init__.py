"""The egress service's audit log.

Pure (no web or database): :mod:`.chain` (the event record and the rule that chains it),
:mod:`.verify` (checking a log and its checkpoints), :mod:`.file_log` (the JSON-lines file log
and checkpoint files), :mod:`.export` (CSV/JSON-lines export), :mod:`.cli`
(``python -m egress.audit``) and :mod:`.signing` (signed release records, which double as
checkpoints). On the database: :mod:`.db_log` (the chain kept in the service's database) and
:mod:`.replay` (the database checked against the log, and its export)."""
