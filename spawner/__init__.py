"""Havre's hub side: the project spawner, the hub wiring, the download guard, the hub pages."""

from havre import __version__

__all__ = ["__version__"]
