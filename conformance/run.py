"""Check a bundle reader against the conformance suite, by its exit status.

Usage::

    python -m conformance.run --reader 'ferry verify {bundle} --trust {trust}' [--suite DIR] [--jobs N]

``{bundle}`` becomes the path a case hands the reader (a bundle folder, a folder of volumes or
one volume folder), ``{trust}`` its trust policy (``trust.json``; the index also lists the key
files, key ids, channels and threshold for readers that take trust another way). Without
``--suite`` the suite is generated into a temporary folder first. Each case passes when the
reader's exit status matches its verdict: ``accept`` 0, ``reject`` 1 or 2, ``incomplete`` 3;
anything else (a crash, a timeout, exit 70) fails. Exit status: 0 when every case passed.
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


def run_case(suite: Path, case: dict[str, Any], reader: str, timeout: float) -> Result:
    command = reader.format(bundle=shlex.quote(str(suite / case["bundle"])),
                            trust=shlex.quote(str(suite / case["trust"])))
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(case["id"], case["rule"], case["verdict"], None, "timed out")
    return Result(case["id"], case["rule"], case["verdict"], done.returncode, (done.stderr or done.stdout)[-2000:])


def run_suite(suite: Path, reader: str, *, jobs: int = 2, timeout: float = 120,
              only: set[str] | None = None) -> list[Result]:
    """Every case of the suite under ``suite`` against ``reader``, in index order."""
    index = json.loads((Path(suite) / "index.json").read_text(encoding="utf-8"))
    cases = [c for c in index["cases"] if only is None or c["id"] in only]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda c: run_case(Path(suite), c, reader, timeout), cases))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", required=True, help="command line with {bundle} and {trust}")
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
        results = run_suite(suite, args.reader, jobs=args.jobs, timeout=args.timeout,
                            only=set(args.only) if args.only else None)
    failed = [r for r in results if not r.passed]
    for r in results:
        mark = "pass" if r.passed else "FAIL"
        print(f"{mark}  {r.id:34} §{r.rule:6} expected {r.verdict:10} got exit {r.exit}")
        if not r.passed or args.verbose:
            lines = r.output.strip().splitlines()
            print("      " + ("\n      ".join(lines) if not r.passed else (lines[-1][:220] if lines else "")))
    print(f"{len(results) - len(failed)} of {len(results)} cases passed")
    return 0 if not failed and results else 1


if __name__ == "__main__":
    raise SystemExit(main())
