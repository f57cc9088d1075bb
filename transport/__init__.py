"""Network transport: the OCI distribution client and its credential handling.

Both sides talk to registries (the hub pulls, the edge pushes) through :mod:`transport.registry`.
This package does the I/O that the contract (:mod:`manifests`, pure data, encoding, hashing
and verification) must not: HTTP, the Docker config file and credential helpers. It imports
only :mod:`manifests` (reference parsing, digests, errors); ``bundler`` and ``importer`` may
import it, and it never imports them (tests/test_structure.py).
"""
