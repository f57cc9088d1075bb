"""ferry's command line. The product's logic lives in ``bundler`` (hub), ``importer`` (edge)
and ``manifests`` (the bundle contract); this package only parses arguments and prints."""

from manifests import __version__

__all__ = ["__version__"]
