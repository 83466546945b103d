"""``python -m spawner.broker``: the broker's server (see :mod:`spawner.broker.service`)."""

from spawner.broker.service import main

main()
