"""``--key`` options as the signing commands take them, and the terminal passphrase prompt.

``--key KEY`` (repeatable) names a private key; ``--key KEY:env=VAR``, ``--key KEY:fd=N`` and
``--key KEY:file=PATH`` give that key's own passphrase source (manifests.keys.parse_key_ref).
An encrypted key without a source is asked for on the terminal with no echo (getpass).
"""

from __future__ import annotations

import getpass
import sys

from manifests.keys import KeyRef, parse_key_ref

KEY_HELP = ("Private signing key (.key); repeat to add signatures. KEY:env=VAR, KEY:fd=N or KEY:file=PATH "
            "gives that key's passphrase; an encrypted key without one is asked for on the terminal.")


def key_refs(values: list[str]) -> list[KeyRef]:
    """The ``--key`` values, parsed (UsageError for a malformed one)."""
    return [parse_key_ref(v) for v in values]


def ask_terminal(prompt: str) -> bytes | None:
    """Ask for a passphrase with no echo; None when stdin is not a terminal (scripts give a source)."""
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass(prompt).encode("utf-8")
    except EOFError:
        return None
