"""``python -m havre.broker``: the broker's server (see :mod:`havre.broker.service`)."""

from havre.broker.service import main

main()
