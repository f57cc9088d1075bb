"""The edge side: read bundles from the medium, verify, store, apply, record."""
