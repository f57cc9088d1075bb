"""Apply targets at the edge: models (model store), images (registry or OCI layout),
manifests (cluster via server-side apply, or a GitOps folder).

Every apply function gets the verified artifact and ``open_entry(entry) -> BinaryIO``, a
stream of the entry's exact, already-verified bytes; it never reads the medium itself.
"""
