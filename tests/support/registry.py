"""The real OCI registry fixture (Debian's docker-registry on 127.0.0.1). Owned by the images work."""
