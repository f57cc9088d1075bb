"""The bundle contract shared by the hub (``bundler``) and the edge (``importer``).

Everything both sides must agree on lives here: the manifest data model
(:mod:`manifests.model`), its canonical encoding (:mod:`manifests.canonical`),
content addressing (:mod:`manifests.digest`), path rules (:mod:`manifests.paths`),
the format's limits (:mod:`manifests.limits`), keys, signatures and trust.
The byte-level specification is ``docs/bundle-format.md``.
"""

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "PUBLISH_FORMAT_VERSION", "VARIANTS_FORMAT_VERSION", "__version__"]

__version__ = "0.1.0"

#: Type tag of a bundle manifest.
FORMAT_NAME = "ferry-bundle"
#: Version of the bundle format this code writes and the highest 1.x it reads.
FORMAT_VERSION = "1.1"  # 1.1 added bundle.expires (docs/bundle-format.md §8)
#: The version a manifest says when a model artifact names its variant (1.2 added
#: ``artifacts[].variant``); without variants the bundle stays 1.1, readable by older ferry.
VARIANTS_FORMAT_VERSION = "1.2"
#: The version a manifest says when a model artifact carries the publishing digests (1.3 added
#: ``files[].sha256`` and ``artifacts[].modelcar``, docs/bundle-format.md 3.2.3); it includes 1.2.
PUBLISH_FORMAT_VERSION = "1.3"
