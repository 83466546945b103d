"""Files submitted for release: what kinds are accepted, how each is checked, how each is shown.

* :mod:`egress.files.kinds` -- the one table of file kinds (extensions, labels, media types,
  script MIME types) every other module reads;
* :mod:`egress.files.checks` -- the automatic checks a file's bytes and name go through;
* :mod:`egress.files.render` -- a file shown to an output checker, with nothing able to run;
* :mod:`egress.files.sdc_badge` -- the service's SDC check of a file set against the
  researcher's library's record of that exact file.

Pure: bytes and names in, results out. Nothing here reads the outputs folder, the database or
the content store, and nothing here knows the web layer.
"""
