"""Link benchmark (issue #18): importing over a registry against importing from a folder, side by side in one run.

Prints the figures issue 18 sets as goals:
  * time of ``ferry import oci://…`` from a loopback registry (fresh state) /
    time of ``ferry import FOLDER`` of the same bundle (fresh state)            (<= 1.25)
  * bytes fetched from the registry to import the next version (10% of the tensors changed,
    pushed as a full bundle) / bytes of the delta bundle ``ferry export --since`` writes for it
                                                                              (<= 1.1)

Usage: python bench/link_bench.py [--mib 1024] [--dir /tmp/ferry-link-bench] [--rounds 3] [--keep]
(FERRY_BENCH_MIB also sets the size). The registry is Debian's ``docker-registry`` on 127.0.0.1
(plain HTTP, as ferry speaks to loopback). The model is the export bench's: fp16 safetensors of
random bytes. Both imports run ``--rounds`` times, alternating (folder, registry, folder, ...): the
median of each counts, its spread (fastest-slowest) and the median of the rounds' own ratios (each
registry import against the folder import just before it: the two share the machine's load) are
printed beside it, with the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


def start_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("docker-registry did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used (``/proc/PID/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=int(os.environ.get("FERRY_BENCH_MIB", "1024")))
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-link-bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    import export_bench as eb  # the model generator and timing helpers (bench/ is sys.path[0])
    work = a.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = os.getloadavg()
    reg, host = start_registry(work / "registry")
    key, pub = work / "keys" / "hub.key", work / "keys" / "hub.pub"
    try:
        layout = eb.model_layout(a.mib * MiB)
        eb.make_model(work / "v1", layout)
        subprocess.run(eb.ferry("keys", "generate", "hub", "--out", work / "keys"), check=True, capture_output=True)
        s1 = eb.spec(work / "v1.yaml", work / "v1", "1.0.0")
        subprocess.run(eb.ferry("export", s1, "--out", work / "b1", "--key", key, "--state", work / "hub",
                                "--push", f"oci://{host}/bench/llm:1"), check=True, stdout=subprocess.DEVNULL)
        t_folder: list[float] = []
        t_link: list[float] = []
        rss: dict[str, list[int]] = {"folder": [], "link": []}
        reg_cpu: list[float] = []
        eb.CPU.update(folder=[], link=[])
        for _ in range(a.rounds):
            for where, times, kind in ((work / "b1", t_folder, "folder"), (f"oci://{host}/bench/llm:1", t_link, "link")):
                shutil.rmtree(work / "edge", ignore_errors=True)
                subprocess.run(["sync"], check=True)
                served = cpu_seconds(reg.pid)
                t, peak, rc = eb.run(eb.ferry("import", where, "--trust", pub, "--state", work / "edge"),
                                     kind, stdout=subprocess.DEVNULL)
                assert rc == 0, f"ferry import {where} failed"
                if kind == "link":
                    reg_cpu.append(cpu_seconds(reg.pid) - served)
                rss[kind].append(peak)
                t_sync, _, _ = eb.run(["sync"])
                times.append(t + t_sync)

        # the next version: 10% of the tensors changed; the edge holds v1 (from the last round)
        eb.make_v2(work / "v1", work / "v2", layout, 0.10)
        subprocess.run(eb.ferry("receipt", "--state", work / "edge", "--out", work / "receipt.json"), check=True,
                       stdout=subprocess.DEVNULL)
        s2 = eb.spec(work / "v2.yaml", work / "v2", "1.1.0")
        subprocess.run(eb.ferry("export", s2, "--out", work / "b2-delta", "--key", key, "--state", work / "hub-d",
                                "--since", work / "receipt.json"), check=True, stdout=subprocess.DEVNULL)
        subprocess.run(eb.ferry("export", s2, "--out", work / "b2", "--key", key, "--state", work / "hub",
                                "--push", f"oci://{host}/bench/llm:2"), check=True, stdout=subprocess.DEVNULL)
        done = subprocess.run(eb.ferry("import", f"oci://{host}/bench/llm:2", "--trust", pub, "--state",
                                       work / "edge", "--json"), check=True, capture_output=True, text=True)
        fetched = json.loads(done.stdout)["bundles"][0]["fetched"]
        delta = eb.du(work / "b2-delta")
        full = eb.du(work / "b2")
    finally:
        reg.terminate()
        reg.wait()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    folder, link = statistics.median(t_folder), statistics.median(t_link)
    paired = statistics.median(b / a for a, b in zip(t_folder, t_link))

    def spread(times: list[float]) -> str:
        return f"spread {min(times):.2f}-{max(times):.2f}; all: {', '.join(f'{t:.2f}' for t in times)}"

    print(f"model: {a.mib} MiB fp16 safetensors in {len(layout)} shard(s); {os.cpu_count()} cores; median of {a.rounds}")
    print(f"ferry import FOLDER (fresh state) + sync        : {folder:7.2f} s   ({spread(t_folder)})")
    print(f"ferry import oci:// loopback (fresh state) + sync: {link:7.2f} s   ({spread(t_link)})")
    print(f"  ratio of the medians {link / folder:.2f}x, median of the rounds' ratios {paired:.2f}x (goal <= 1.25x)")
    med = statistics.median
    print(f"  CPU seconds (user+sys, median): folder import {med(eb.CPU['folder']):.2f}; registry import "
          f"{med(eb.CPU['link']):.2f} + the registry serving it {med(reg_cpu):.2f} "
          f"(less disturbed by other load than wall time)")
    print(f"  peak RSS (max): folder import {max(rss['folder']) / MiB:.0f} MiB, registry import "
          f"{max(rss['link']) / MiB:.0f} MiB")
    print(f"next version (10% of tensors changed): full bundle {full / MiB:.1f} MiB, delta bundle (export --since) "
          f"{delta / MiB:.1f} MiB")
    print(f"bytes fetched from the registry for it          : {fetched['bytesFetched'] / MiB:7.1f} MiB in "
          f"{fetched['requests']} request(s)   ratio {fetched['bytesFetched'] / delta:.2f}x of the delta bundle "
          f"(goal <= 1.1x)")
    print(f"load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; after: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (the machine may be shared)")


if __name__ == "__main__":
    main()
