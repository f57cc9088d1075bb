"""Errors that end in one clear line for the operator, never a traceback."""

from __future__ import annotations


class FerryError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line shown; ``exit_code`` the status."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class FormatError(FerryError):
    """Bytes on the medium (manifest, signature file, receipt, trust policy) break the format."""


class LimitError(FormatError):
    """Input exceeds one of the format's limits; refused before it is read in full."""


class KeyError_(FerryError):
    """A key file is missing, corrupt, of the wrong kind, or its passphrase is wrong."""


class VerificationError(FerryError):
    """Signatures, trust or content did not verify. Exit status 1: the check ran and said no."""

    exit_code = 1
