"""Signed times against the verifier's clock: bundle expiry and clock skew (issue #15, item 3).

A bundle may carry a signed ``bundle.expires`` (docs/bundle-format.md §3.1, format 1.1): from
that time on it is refused everywhere, which defends against freeze and replay attacks (TUF
specification §5.4.3, "check for a freeze attack") without an operator remembering
``--max-age``. When the times disagree, the message says which clock looks wrong, using the
newest signed time this site already accepted as a witness: a verifier whose clock reads
earlier than that is behind; otherwise a bundle "from the future" means the hub's clock is
ahead. Pure: times in, a reason out.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .root import format_time, parse_time

#: Clock difference tolerated before a bundle dated in the future is refused.
SKEW = timedelta(minutes=5)


def bundle_time_problem(created: str, expires: str | None, now: datetime,
                        last_seen: datetime | None = None, *, writer: str = "hub",
                        reader: str = "site") -> str | None:
    """Why a bundle signed at ``created`` and valid until ``expires`` is not acceptable at
    ``now`` (UTC), or None.

    Args:
        created, expires: the manifest's ``bundle.created`` and ``bundle.expires``
            (``YYYY-MM-DDTHH:MM:SSZ``; ``expires`` None: the bundle never expires).
        now: the verifier's clock.
        last_seen: the newest signed time this site accepted before (None: unknown).
        writer, reader: who signs and who reads, for the message: a hub-bound bundle by
            default; ``writer="site", reader="hub"`` for a return bundle (docs/bundle-format.md §13).
    Only a bundle with an expiry is checked for a creation time in the future: it is the one
    whose validity window depends on the two clocks agreeing.
    """
    if expires is None:
        return None
    made, until = parse_time(created), parse_time(expires)
    clock = f"this machine's clock says {format_time(now)}"
    if last_seen is not None and now + SKEW < last_seen:
        return (f"this machine's clock looks wrong: it says {format_time(now)}, before {format_time(last_seen)}, "
                f"a signed time this {reader} already accepted; set the clock and try again")
    if made > now + SKEW:
        return (f"bundle was signed at {created}, {_span(made - now)} after {clock}: the {writer}'s clock looks ahead "
                f"(this machine's is not behind anything it has accepted); check the {writer}'s clock")
    if now >= until:
        return (f"bundle expired at {expires} ({_span(now - until)} ago; {clock}): ask the {writer} for a fresh bundle, "
                "or fix this machine's clock if it is wrong")
    return None


def _span(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    return f"{s // 86400}d" if s >= 86400 else f"{s // 3600}h" if s >= 3600 else f"{max(s // 60, 1)}m"
