"""ferry's exceptions, in one module (as python-tuf keeps ``tuf/api/exceptions.py``).

Every failure the user can act on is a :class:`FerryError`; the command line prints ``str(err)``
as one line (``ferry: error: ...``) and exits with ``err.exit_code``. The exit codes are a
documented contract (README, docs/operator-guide.md):

====  =====================================================================================
0     done: everything applied, verified or already present
1     a check ran and said no: signature, trust, digest, downgrade, policy (VerificationError)
2     bad input or an environment failure: arguments, spec, format, I/O, registry, cluster
3     incomplete: the bundle verified so far but waits for volumes or files (IncompleteError)
70    internal error (a bug in ferry; FERRY_DEBUG=1 shows the traceback)
130   interrupted (Ctrl-C); what was written is kept and the same command resumes
====  =====================================================================================

Errors that concern a place say which one (:data:`Place`): the operator's *source* files, the
*medium* (a bundle folder or volume), the *state* (hub or edge state folder), the *output* a
user named, a *registry*, or a *cluster*. Never one for the other.
"""

from __future__ import annotations

from typing import Literal

#: Where an I/O failure happened (issue: "every error names the right place").
Place = Literal["source", "medium", "state", "output", "registry", "cluster"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class FerryError(Exception):
    """A failure the user can act on. ``str(err)`` is the one line shown; ``exit_code`` the status."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(FerryError):
    """Command-line arguments or options that cannot work together or are malformed (exit 2)."""


class SpecError(UsageError):
    """The operator's bundle spec (``bundle.yaml``) or a file it names is malformed (exit 2)."""


class FormatError(FerryError):
    """Bytes on the medium (manifest, signature file, receipt, trust policy) break the format."""


class LimitError(FormatError):
    """Input exceeds one of the format's limits; refused before it is read in full."""


class KeyFileError(FerryError):
    """A key file is missing, corrupt, of the wrong kind, or its passphrase is wrong."""


class VerificationError(FerryError):
    """Signatures, trust or content did not verify. Exit status 1: the check ran and said no."""

    exit_code = EXIT_REFUSED


class ChunkError(VerificationError):
    """One chunk failed verification (as desync's ``ChunkInvalid{ID, Sum}``).

    Attributes:
        chunk_id: the chunk's id as the manifest names it (``blake3:<64 hex>``).
        why: ``"missing"`` (no volume at hand carries it), ``"digest"`` (its bytes hash to
            something else), ``"size"`` (it decompressed to another length) or ``"corrupt"``
            (its frame is not valid zstd).
    """

    def __init__(self, chunk_id: str, why: str, message: str) -> None:
        super().__init__(message)
        self.chunk_id = chunk_id
        self.why = why


class PolicyError(VerificationError):
    """The site's policy refused something that verified (version rule, age, channel, replay)."""


class IncompleteError(FerryError):
    """Work verified so far but cannot finish until more volumes or files arrive (exit 3)."""

    exit_code = EXIT_INCOMPLETE


class Interrupted(FerryError):
    """The run was interrupted (Ctrl-C, exit 130); the message says what was kept and how to resume."""

    exit_code = EXIT_INTERRUPTED


class PlaceError(FerryError):
    """An I/O failure at a named place (:data:`Place`): ``place`` and ``path`` say where."""

    def __init__(self, place: Place, path: str, message: str) -> None:
        super().__init__(message)
        self.place: Place = place
        self.path = path


class RegistryError(FerryError):
    """An OCI registry refused a request, was unreachable, or answered against the spec."""

    place: Place = "registry"


class ClusterError(FerryError):
    """The Kubernetes API server refused a request or was unreachable."""

    place: Place = "cluster"


class PlacementError(FerryError):
    """A manifest set's KubeStellar control objects (BindingPolicy, Binding, CustomTransform,
    StatusCollector) are malformed or ask for what the site cannot do (exit 2). Raised while the
    placement is computed, before the first object is applied (:mod:`manifests.placement`)."""
