"""Operations monitoring of the egress service: its Prometheus metrics.

``metrics``: the collector that computes every series from the database at scrape time (with a
bounded cost per scrape), and the metric names; ``refusals``: the tally of the service's refusals
shared by its worker processes; ``verify_record``: the last audit verification's result. No web
code: the ``/metrics`` handler and its address check are in :mod:`egress.web.metrics`.
"""
