"""Shared fixtures. Area-specific fixtures live in tests/support/<area>.py, loaded here."""

pytest_plugins = [
    "tests.support.common",
    "tests.support.registry",
    "tests.support.fakekube",
]
