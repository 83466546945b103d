"""The host side: the ``havre`` command line, the stack launcher, the demo data."""
