"""Apply targets at the edge: models (model store), images (registry or OCI layout),
manifests (cluster via server-side apply, or a GitOps folder).

Every apply function gets the verified artifact and ``read_entry(entry) -> Iterator[bytes]``
(see :func:`importer.content.stream_entry`): the entry's bytes chunk by chunk, each chunk
already checked against its id, raising VerificationError at the end if the whole does not
match. An apply function must not make anything visible (rename into place, tag a manifest)
before the iterator is exhausted without error. It never reads the medium itself.
"""
