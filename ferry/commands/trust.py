"""``ferry trust``: signed, versioned trust policies (create, sign, show, init, update)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ferry.keyopts import KEY_HELP

trust_app = typer.Typer(help="Signed, versioned trust policies: create, sign, pin, rotate, show.",
                        no_args_is_help=True)

_POLICY_HELP = "The policy document (root.json); its signatures are read from root.json.sig beside it."


def _read_pair(path: Path) -> tuple[bytes, bytes]:
    from manifests import limits
    from manifests.bundle import read_bounded
    from manifests.errors import KeyFileError

    data = read_bounded(path, limits.MAX_TRUST_FILE_BYTES, "policy", place="source")
    sig = path.with_name(path.name + ".sig")
    if not sig.is_file():
        raise KeyFileError(f"policy {path}: no signature file {sig.name} beside it (sign it with `ferry trust sign`)")
    return data, read_bounded(sig, limits.MAX_SIGNATURE_FILE_BYTES, "policy signature", place="source")


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _describe(root: Any, signature: bytes | None) -> dict[str, Any]:
    now = _now()
    from manifests.signing import SignatureFile

    doc = root.summary()
    doc["thresholds"] = root.to_dict()["thresholds"]
    doc["keys"] = [{"keyid": k.keyid, "name": k.name, "channels": list(k.channels) if k.channels else None,
                    "expires": k.expires, "status": root.key_problem(k, now) or "usable"} for k in root.keys]
    doc["revoked"] = list(root.revoked)
    if signature is not None:
        doc["signers"] = [s.keyid for s in SignatureFile.from_bytes(signature).signatures]
    return doc


@trust_app.command("create", epilog="Example: ferry trust create policy.yaml --out root.json")
def create(
    spec: Path = typer.Argument(..., help="YAML: apiVersion ferry/v1, kind TrustRoot, policyId, version, expires, "
                                          "keys, thresholds {root, bundles, channels}, revoked."),
    out: Path = typer.Option(..., "--out", metavar="FILE.json", help="Write the unsigned policy document here "
                             "(and an empty FILE.json.sig); never overwrites."),
) -> None:
    """Write a trust policy document from YAML; sign it next with `ferry trust sign`."""
    import yaml

    from ferry.ui import write_output
    from importer.policy import parse_max_age
    from manifests.errors import FormatError, UsageError
    from manifests.root import build_root
    from manifests.signing import TRUST_PAYLOAD_TYPE, SignatureFile

    try:
        doc = yaml.safe_load(spec.read_bytes())
    except OSError as exc:
        raise UsageError(f"{spec}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise FormatError(f"{spec}: not valid YAML") from None
    from manifests.yamldoc import check_expanded

    check_expanded(doc, str(spec))
    if not isinstance(doc, dict):
        raise FormatError(f"{spec}: must be a mapping (kind: TrustRoot)")
    root = build_root(doc, spec.parent, str(spec), _now(), parse_max_age)
    sig = out.with_name(out.name + ".sig")
    for p in (out, sig):
        if p.exists() or p.is_symlink():
            raise UsageError(f"{p} already exists; ferry never overwrites a policy")
    write_output(out, root.raw, "--out")
    write_output(sig, SignatureFile(TRUST_PAYLOAD_TYPE, ()).to_bytes(), "--out")
    typer.echo(f"{out}: {root.label}, expires {root.expires}; unsigned: sign it with `ferry trust sign {out} --key KEY`")


@trust_app.command("sign", epilog="Example: ferry trust sign root.json --key hub-a.key --trust current/root.json")
def sign(
    policy: Path = typer.Argument(..., help=_POLICY_HELP),
    key: list[str] = typer.Option(..., "--key", metavar="KEY[:env=VAR|:fd=N|:file=PATH]", help=KEY_HELP),
    trust: Path = typer.Option(None, "--trust", metavar="ROOT.json",
                               help="The policy in force, whose keys must also sign an update (to check their "
                                    "signatures already there)."),
) -> None:
    """Add signatures to a policy document (root.json.sig); existing signatures must verify."""
    from ferry.keyopts import ask_terminal, key_refs
    from ferry.ui import write_output
    from manifests.keys import key_id, load_signing_keys, parse_public
    from manifests.root import parse_root
    from manifests.signing import TRUST_PAYLOAD_TYPE, SignatureFile, cosign

    data, sig = _read_pair(policy)
    root = parse_root(data, str(policy))
    known = {}
    for r in ([parse_root(_read_pair(trust)[0], str(trust))] if trust else []) + [root]:
        for rk in r.keys:
            known[rk.keyid] = (rk.name, parse_public(rk.public_pem.encode(), rk.name))
    keys = load_signing_keys(key_refs(key), ask=ask_terminal)
    for k in keys:
        known.setdefault(key_id(k.public_key()), (f"--key {key_id(k.public_key())[:16]}…", k.public_key()))
    new, added = cosign(data, [SignatureFile.from_bytes(sig)], keys, known, payload_type=TRUST_PAYLOAD_TYPE)
    if added:
        write_output(policy.with_name(policy.name + ".sig"), new.to_bytes(), "policy")
    names = [known[s.keyid][0] for s in new.signatures]
    typer.echo(f"{root.label}: added {len(added)} signature(s); signed by {len(names)}: {', '.join(names)}")


@trust_app.command("show", epilog="Example: ferry trust show --state /var/lib/ferry")
def show(
    policy: Path = typer.Argument(None, help=_POLICY_HELP + " Or give --state."),
    state: Path = typer.Option(None, "--state", help="Show the policy this state folder (edge or hub) pins."),
    json_out: bool = typer.Option(False, "--json", help="Print the policy as JSON on stdout."),
) -> None:
    """Show a trust policy: id, version, expiry, thresholds, keys (usable, revoked, expired)."""
    import json

    from importer.trust_store import TrustStore
    from manifests.errors import UsageError
    from manifests.root import parse_root

    if (policy is None) == (state is None):
        raise UsageError("give a policy file or --state, one of them")
    if state is not None:
        stored = TrustStore(state).current()
        if stored is None:
            raise UsageError(f"--state {state} pins no trust policy (imports there use --trust files)")
        root, sig = stored.root, stored.signature
        history = TrustStore(state).versions()
    else:
        data, sig = _read_pair(policy)
        root, history = parse_root(data, str(policy)), []
    doc = _describe(root, sig)
    if history:
        doc["history"] = history
    if json_out:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    t = doc["thresholds"]
    typer.echo(f"{root.label}, expires {root.expires}")
    typer.echo(f"  thresholds: policy updates {t['root']}, bundles {t['bundles']}"
               + "".join(f", channel {c} {n}" for c, n in sorted(t.get("channels", {}).items())))
    for k in doc["keys"]:
        extra = (f", channels {', '.join(k['channels'])}" if k["channels"] else "") + \
                (f", expires {k['expires']}" if k["expires"] else "")
        typer.echo(f"  key {k['name']} {k['keyid']}: {k['status']}{extra}")
    for kid in doc["revoked"]:
        typer.echo(f"  revoked {kid}")
    typer.echo(f"  signed by: {', '.join(doc.get('signers') or []) or 'nobody'}")
    if history:
        typer.echo(f"  versions held: {', '.join(map(str, history))}")


def _audit_whole(state: Path) -> None:
    """Refuse before changing the policy when the change could not be recorded."""
    from importer.audit import AuditTrail
    from manifests.errors import VerificationError

    check = AuditTrail(state).verify()
    if not check.ok:
        raise VerificationError(f"audit trail under {state} is not whole ({check.summary}); the trust policy was not "
                                "changed: run `ferry audit verify --state` and keep the evidence")


def _audit(state: Path, decision: str, reason: str, old: Any, new: Any, sig: bytes) -> None:
    from importer.trust_store import _record, signer_ids

    _record(state, decision, reason, old, new, signer_ids(sig), None, None)


@trust_app.command("init", epilog="Example: ferry trust init --state /var/lib/ferry /media/admin/root.json")
def init(
    policy: Path = typer.Argument(..., help=_POLICY_HELP),
    state: Path = typer.Option(..., "--state", help="The edge (or hub) state folder that pins it."),
) -> None:
    """Pin a site's first signed policy (from the operator's own medium); later ones rotate it."""
    from importer.trust_store import TrustStore

    data, sig = _read_pair(policy)
    _audit_whole(state)
    root = TrustStore(state).pin(data, sig, _now(), str(policy))
    _audit(state, "trust-pinned", f"pinned {root.label} from {policy}", None, root, sig)
    typer.echo(f"pinned {root.label} (expires {root.expires}) in {state}")


@trust_app.command("update", epilog="Example: ferry trust update --state /var/lib/ferry root-v2.json")
def update(
    policy: Path = typer.Argument(..., help=_POLICY_HELP),
    state: Path = typer.Option(..., "--state", help="The state folder whose pinned policy it replaces."),
) -> None:
    """Replace the pinned policy with a newer one signed by the current keys and its own.

    Needs a root threshold of the current policy's usable keys and of its own; bundles carry
    updates too, and import applies them itself."""
    from importer.trust_store import TrustStore

    data, sig = _read_pair(policy)
    _audit_whole(state)
    old, new = TrustStore(state).update(data, sig, _now(), str(policy))
    _audit(state, "trust-updated", f"{old.label} -> v{new.version} from {policy}", old, new, sig)
    typer.echo(f"{old.label} replaced by v{new.version} (expires {new.expires}) in {state}")


def register(app: typer.Typer) -> None:
    app.add_typer(trust_app, name="trust")
