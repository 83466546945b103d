"""Havre's enclave side: the project spawner, the enclave config, the local stack launcher."""

__version__ = "0.1.0"
