"""The hub side: bundle specs, sources (models, images, manifests), chunking, writing bundles."""
