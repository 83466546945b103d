"""Files submitted for release: what kinds are accepted, how each is checked, how each is shown.

* :mod:`egress.files.kinds` -- the one table of file kinds (extensions, labels, media types,
  script MIME types) every other module reads;
* :mod:`egress.files.checks` -- the automatic checks a file's bytes and name go through: the
  kind found by content, then that kind's check;
* :mod:`egress.files.render` -- a file shown to an output checker, with nothing able to run:
  the kind looked up, then that kind's rendering, then the independent check;
* one module a kind, holding its check and its rendering: :mod:`~egress.files.tables` (CSV,
  TSV), :mod:`~egress.files.images` (PNG, JPEG), :mod:`~egress.files.pdf`,
  :mod:`~egress.files.svg`, :mod:`~egress.files.text` (text, Markdown) and
  :mod:`~egress.files.notebooks` (the one notebook stripper);
* :mod:`egress.files.sanitise` -- the one HTML sanitiser and its independent check;
* :mod:`egress.files.common` -- the refusal, the policy and the results every kind shares;
* :mod:`egress.files.sdc_badge` -- the service's SDC check of a file set against the
  researcher's library's record of that exact file.

Pure: bytes and names in, results out. Nothing here reads the outputs folder, the database or
the content store, and nothing here knows the web layer.
"""
