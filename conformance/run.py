"""Check a bundle reader against the conformance suite, by its exit status.

Usage::

    python -m conformance.run --reader 'ferry verify {bundle} --trust {trust}' \
        [--return-reader 'CMD {bundle} {site} {key} {work}'] [--suite DIR] [--jobs N]

``{bundle}`` becomes the path a case hands the reader (a bundle folder, a folder of volumes or
one volume folder), ``{trust}`` its trust policy (``trust.json``; the index also lists the key
files, key ids, channels and threshold for readers that take trust another way). Without
``--suite`` the suite is generated into a temporary folder first. Each case passes when the
reader's exit status matches its verdict: ``accept`` 0, ``reject`` 1 or 2, ``incomplete`` 3;
anything else (a crash, a timeout, exit 70) fails. Exit status: 0 when every case passed.

Cases whose ``reader`` is ``return`` (docs/bundle-format.md section 13) go to ``--return-reader``,
a hub's reader of return bundles: ``{site}`` is the site's name, ``{key}`` its public key file,
``{trust}`` a trust policy allowing that key on the site's channel only, and ``{work}`` a fresh
empty folder for the case (a hub state, say). Without ``--return-reader`` they are skipped and
said so. ferry's own return reader::

    --return-reader 'ferry sites add {site} --key {key} --hub {work} >/dev/null || exit 70; ferry return import {bundle} --hub {work}'
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPECTED = {"accept": (0,), "reject": (1, 2), "incomplete": (3,)}


@dataclass(frozen=True)
class Result:
    id: str
    rule: str
    verdict: str
    exit: int | None  # None: timed out
    output: str

    @property
    def passed(self) -> bool:
        return self.exit in EXPECTED[self.verdict]


def run_case(suite: Path, case: dict[str, Any], reader: str, timeout: float,
             site: dict[str, str] | None = None) -> Result:
    """Run ``reader`` on one case (``site``: the index's ``returnSite``, for return readers)."""
    with tempfile.TemporaryDirectory(prefix="ferry-conformance-case-") as work:
        fields = {"bundle": str(suite / case["bundle"]), "trust": str(suite / case["trust"]), "work": work,
                  "site": (site or {}).get("site", ""), "key": str(suite / (site or {}).get("key", ""))}
        command = reader.format(**{k: shlex.quote(v) for k, v in fields.items()})
        try:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Result(case["id"], case["rule"], case["verdict"], None, "timed out")
    return Result(case["id"], case["rule"], case["verdict"], done.returncode, (done.stderr or done.stdout)[-2000:])


def run_suite(suite: Path, reader: str, *, return_reader: str | None = None, jobs: int = 2, timeout: float = 120,
              only: set[str] | None = None) -> list[Result]:
    """Every case of the suite under ``suite``, in index order: hub-bound cases against
    ``reader``, return cases (section 13) against ``return_reader`` (left out when it is None)."""
    index = json.loads((Path(suite) / "index.json").read_text(encoding="utf-8"))
    readers = {"hub-bound": reader, "return": return_reader}
    cases = [c for c in index["cases"] if (only is None or c["id"] in only)
             and readers[c.get("reader", "hub-bound")] is not None]
    site = index.get("returnSite")

    def one(c: dict[str, Any]) -> Result:
        return run_case(Path(suite), c, str(readers[c.get("reader", "hub-bound")]), timeout, site)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, cases))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", required=True, help="command line with {bundle} and {trust}")
    parser.add_argument("--return-reader", help="command line for return bundles (section 13), with {bundle} and "
                        "any of {site} {key} {trust} {work}; without it those cases are skipped")
    parser.add_argument("--suite", type=Path, help="a suite written by conformance.generate (default: generate one)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120, help="seconds per case")
    parser.add_argument("--only", action="append", help="run only this case id (repeatable)")
    parser.add_argument("--verbose", action="store_true", help="show every reader's last output line")
    args = parser.parse_args(argv)
    if "{bundle}" not in args.reader:
        parser.error("--reader must contain {bundle}")
    with tempfile.TemporaryDirectory(prefix="ferry-conformance-") as tmp:
        suite = args.suite
        if suite is None:
            from conformance.generate import generate

            suite = Path(tmp) / "suite"
            generate(suite)
        skipped = 0 if args.return_reader else sum(
            1 for c in json.loads((suite / "index.json").read_text(encoding="utf-8"))["cases"]
            if c.get("reader") == "return" and (not args.only or c["id"] in args.only))
        results = run_suite(suite, args.reader, return_reader=args.return_reader, jobs=args.jobs, timeout=args.timeout,
                            only=set(args.only) if args.only else None)
    failed = [r for r in results if not r.passed]
    for r in results:
        mark = "pass" if r.passed else "FAIL"
        print(f"{mark}  {r.id:34} §{r.rule:6} expected {r.verdict:10} got exit {r.exit}")
        if not r.passed or args.verbose:
            lines = r.output.strip().splitlines()
            print("      " + ("\n      ".join(lines) if not r.passed else (lines[-1][:220] if lines else "")))
    print(f"{len(results) - len(failed)} of {len(results)} cases passed"
          + (f"; {skipped} return-bundle case(s) skipped (no --return-reader)" if skipped else ""))
    return 0 if not failed and results else 1


if __name__ == "__main__":
    raise SystemExit(main())
