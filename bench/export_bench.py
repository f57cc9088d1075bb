"""Export benchmark: ferry export against ``tar | zstd -3 -T0``, side by side in one run.

Prints the figures issue 19 sets as goals:
  * time of ``ferry export`` / time of ``tar -cf - DIR | zstd -3 -T0 > out && sync``  (goal 3: <= 1.0x)
    over ``--repeat`` rounds (each side right after deleting its own previous output, the order
    flipped every round: see main): median and spread of each, the ratio of the medians and
    the spread of the per-round ratios, CPU seconds (user + system) of each, the load average,
    and the single-thread rate of each export stage (:func:`stage_rates`: what bounds it on many cores)
  * peak RSS of the export process                                              (goal 2: < 256 MiB)
  * delta bundle for v2 (10% of tensors changed, --since v1's receipt) / full
  * export resumed after a kill -9 at 60% / full export time                     (goal 4: <= 0.5x)
    over ``--repeat`` rounds (kill, then the same command again with the same hub state): median
    and spread, and the CPU seconds of the resumed run against a full one

Usage: python bench/export_bench.py [--mib 1024] [--repeat 4] [--dir /tmp/ferry-bench] [--keep]
(FERRY_BENCH_MIB and FERRY_BENCH_REPEAT also set them). The model is LLM-shaped fp16 safetensors
(``delta_bench.py``'s medium shape: per layer q/k/v/o of 2 MiB and 512 KiB, gate/up/down of
8 MiB and two norms, values from N(0, 0.02), seeded, about 8% compressible as real weights
are), in shards of up to 512 MiB. ``import_bench.py`` and ``link_bench.py`` reuse
:func:`model_layout` and :func:`make_model` with random bytes (``values="random"``, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

MiB = 1 << 20
TENSOR = 8 * MiB
SHARD = 512 * MiB


def write_safetensors(path: Path, tensors: list[tuple[str, int]], fill) -> None:  # noqa: ANN001
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, size in tensors:
        header[name] = {"dtype": "F16", "shape": [size // 2], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, size in tensors:
            f.write(fill(name, size))


def model_layout(total: int) -> list[list[tuple[str, int]]]:
    """Shards of tensors: per layer one 8 MiB weight and one 8 KiB norm, until ``total`` bytes."""
    shards: list[list[tuple[str, int]]] = [[]]
    used = shard_used = 0
    layer = 0
    while used < total:
        for name, size in ((f"layers.{layer}.weight", TENSOR), (f"layers.{layer}.norm", 8192)):
            size = min(size, total - used) or 2
            if shard_used + size > SHARD:
                shards.append([])
                shard_used = 0
            shards[-1].append((name, size))
            used += size
            shard_used += size
        layer += 1
    return shards


def llm_layout(total: int) -> list[list[tuple[str, int]]]:
    """Shards of an LLM-shaped model of about ``total`` bytes: ``delta_bench.py``'s medium shape
    (hidden 1024, kv 256, MLP 4096: 29.5 MiB a layer), as many layers as fit, in shards of at
    most :data:`SHARD` bytes; (name, bytes) per tensor, in file order."""
    import delta_bench

    h, kv, mlp, _ = delta_bench.SHAPES["medium"]
    per_layer = 2 * (3 * mlp * h + 2 * h * h + 2 * kv * h + 2 * h)
    tensors = delta_bench.layout("medium", max(1, round((total - 2 * delta_bench.VOCAB * h) / per_layer)))
    shards: list[list[tuple[str, int]]] = [[]]
    used = 0
    for name, values in tensors:
        if used + 2 * values > SHARD and shards[-1]:
            shards.append([])
            used = 0
        shards[-1].append((name, 2 * values))
        used += 2 * values
    return shards


def _filler(values: str, seed: int):  # noqa: ANN202
    """(name, size) -> bytes: random bytes, or fp16 values from N(0, 0.02) drawn from ``seed``."""
    if values == "random":
        return lambda _n, s: os.urandom(s)
    import delta_bench

    rng = random.Random(seed)
    return lambda _n, s: delta_bench.fp16_normal(s // 2, rng)


def make_model(folder: Path, layout: list[list[tuple[str, int]]], values: str = "random", seed: int = 19) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fill = _filler(values, seed)
    for i, tensors in enumerate(layout):
        write_safetensors(folder / f"model-{i + 1:05d}-of-{len(layout):05d}.safetensors", tensors, fill)
    (folder / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))


def make_v2(v1: Path, v2: Path, layout: list[list[tuple[str, int]]], fraction: float,
            values: str = "random") -> None:
    """Copy v1 and give ``fraction`` of its (large) tensors new values."""
    shutil.copytree(v1, v2)
    names = [n for shard in layout for n, s in shard if s >= MiB]
    changed = set(random.Random(42).sample(names, max(1, round(len(names) * fraction))))
    fill = _filler(values, 42)
    for i, tensors in enumerate(layout):
        path = v2 / f"model-{i + 1:05d}-of-{len(layout):05d}.safetensors"
        with open(path, "r+b") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            pos = 8 + hlen
            for name, size in tensors:
                if name in changed:
                    f.seek(pos)
                    f.write(fill(name, size))
                pos += size


CPU: dict[str, list[float]] = {"tar": [], "ferry": [], "resume": []}


def run(cmd: list[str], cpu: str | None = None, **kw) -> tuple[float, int, int]:  # noqa: ANN003
    """Wall time, peak RSS (bytes) and exit status of one child process (CPU seconds, user +
    system, of it and its children are kept under ``cpu``)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if cpu:
        CPU[cpu].append(usage.ru_utime + usage.ru_stime)
    return time.monotonic() - start, usage.ru_maxrss * 1024, proc.returncode


def ferry(*args: object) -> list[str]:
    return [sys.executable, "-m", "ferry", *map(str, args)]


def compiled() -> None:
    """Run ferry's commands from here on as installed: from bytecode, compiled once into the
    checkout's ``__pycache__`` folders (git ignores them). ``pip install`` compiles a package's
    modules; a checkout run where PYTHONDONTWRITEBYTECODE is set would compile every ferry
    module on every command, about 50 ms of CPU that an installed ferry never spends. Sets this
    process's environment, which every command it starts inherits."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(root / p) for p in PACKAGES)], check=True,
                   stdout=subprocess.DEVNULL)


#: ferry's packages (pyproject.toml, ``packages.find``).
PACKAGES = ("ferry", "bundler", "importer", "manifests", "transport")


def spec(path: Path, model: Path, version: str) -> Path:
    path.write_text(f"apiVersion: ferry/v1\nkind: Bundle\nmetadata:\n  name: bench\nspec:\n  models:\n"
                    f"    - name: llm\n      version: {version}\n      path: {model}\n")
    return path


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def stage_rates(folder: Path) -> dict[str, float]:
    """Single-threaded rates of the export's stages over a model folder's safetensors files, in
    MB of source per CPU second of the thread doing it (RUSAGE_THREAD), page cache warm: the
    cutting thread (read + FastCDC + the whole-file BLAKE3 on it, or with the hash on a thread of
    its own as where cores allow) and one pool worker (chunk BLAKE3 + zstd at the level the
    exporter picks, :func:`manifests.chunks.chunk_level`: 1 for tensor data). With W workers
    the export cannot go faster than min(cutting thread, W x worker) nor than the disk."""
    import resource

    import blake3

    from bundler import chunker
    from manifests.chunks import chunk_level, compress_chunk, compressor
    from manifests.digest import Hasher

    files = sorted(folder.glob("*.safetensors"))
    total = sum(f.stat().st_size for f in files)

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_THREAD)
        return r.ru_utime + r.ru_stime

    def cut(thread: bool, work: bool = False) -> float:
        cutter, cctx, start = chunker.Cutter(), {lv: compressor(lv) for lv in (chunk_level(False), chunk_level(True))}, cpu()
        for path in files:
            pieces = chunker.segments(path, path.stat().st_size)
            with open(path, "rb") as f:
                for offset, data in cutter.file(f, pieces, Hasher(threaded=False), thread):
                    if work:
                        blake3.blake3(data, max_threads=1).digest()
                        compress_chunk(data, cctx[chunk_level(chunker.in_tensor_data(pieces, offset))])
        return cpu() - start

    cut(False)  # warm the page cache
    inline, threaded = cut(False), cut(True)
    worker = cut(True, work=True) - threaded
    return {"cut+hash": total / inline / 1e6, "cut (hash on its thread)": total / threaded / 1e6,
            "worker": total / worker / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=int(os.environ.get("FERRY_BENCH_MIB", "1024")))
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-bench"))
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("FERRY_BENCH_REPEAT", "4")),
                    help="rounds of tar|zstd and ferry export, alternated (tar first in even rounds, "
                         "ferry first in odd ones); medians and spreads are compared")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    work = a.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        layout = llm_layout(a.mib * MiB)
        make_model(work / "v1", layout, "normal")
        make_v2(work / "v1", work / "v2", layout, 0.10, "normal")
        compiled()
        subprocess.run(ferry("keys", "generate", "hub", "--out", work / "keys"), check=True, capture_output=True)
        key = work / "keys" / "hub.key"
        s1, s2 = spec(work / "v1.yaml", work / "v1", "1.0.0"), spec(work / "v2.yaml", work / "v2", "1.1.0")
        rates = stage_rates(work / "v1")
        subprocess.run(["sync"], check=True)

        # Alternate the two, a fresh output and hub state each time: the machine is shared, so
        # each round's pair sees about the same load; medians and spreads are printed. Each run
        # starts right after its own previous output is deleted, and the order flips every round:
        # on this VM, page-cache pages freed a moment ago are fast to fill again while pages
        # freed seconds earlier have gone back to the host and fault in slowly, so whichever
        # ran second after one shared deletion wrote its output 0.4-1 s slower (measured: ferry
        # 1.2 s first, 2.1-2.4 s second; tar | zstd likewise).
        tars, fulls, loads, rss = [], [], [], 0

        def tar_zstd() -> None:
            (work / "v1.tar.zst").unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            t, _, rc = run(["sh", "-c", f"tar -cf - -C {work} v1 | zstd -3 -T0 -q > {work}/v1.tar.zst && sync"],
                           cpu="tar")
            assert rc == 0
            tars.append(t)

        def export_full() -> None:
            nonlocal rss
            shutil.rmtree(work / "full", ignore_errors=True)
            shutil.rmtree(work / "st1", ignore_errors=True)
            subprocess.run(["sync"], check=True)
            t, peak, rc = run(ferry("export", s1, "--out", work / "full", "--key", key, "--state", work / "st1"),
                              cpu="ferry", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert rc == 0
            fulls.append(t)
            rss = max(rss, peak)

        for i in range(a.repeat):
            loads.append(os.getloadavg()[0])
            for step in (tar_zstd, export_full) if i % 2 == 0 else (export_full, tar_zstd):
                step()
        loads.append(os.getloadavg()[0])
        t_tar, t_full = statistics.median(tars), statistics.median(fulls)
        full_bytes = du(work / "full")

        # delta: v2 --since a receipt listing v1's chunks
        from manifests.model import Manifest
        from manifests.receipt import Receipt

        v1 = Manifest.from_bytes((work / "full" / "manifest.json").read_bytes())
        receipt = Receipt(site="bench-edge", created="2026-01-01T00:00:00Z",
                          chunks=tuple(sorted(c.id for c in v1.chunks)))
        (work / "receipt.json").write_bytes(receipt.to_bytes())
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        t_delta, _, rc = run(ferry("export", s2, "--out", work / "delta", "--key", key, "--state", work / "st1",
                                   "--since", work / "receipt.json"), **quiet)
        assert rc == 0
        delta_bytes = du(work / "delta")

        # resume: kill -9 once 60% of the packs are durable, then run the same command again
        resumes, kills = [], []
        for i in range(a.repeat):
            out, st2 = work / "resumed", work / "st2"
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(st2, ignore_errors=True)
            subprocess.run(["sync"], check=True)
            cmd = ferry("export", s1, "--out", out, "--key", key, "--state", st2)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            journal = out / ".ferry-export" / "journal.jsonl"
            done = 0
            while proc.poll() is None:
                try:
                    done = sum(json.loads(line)["size"] for line in journal.read_bytes().splitlines()[1:])
                except (FileNotFoundError, ValueError):
                    done = 0
                if done >= 0.6 * full_bytes:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.005)
            proc.wait()
            kills.append(done / full_bytes)
            subprocess.run(["sync"], check=True)
            t, _, rc = run(cmd, cpu="resume", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert rc == 0
            resumes.append(t)
        loads.append(os.getloadavg()[0])
        t_resume = statistics.median(resumes)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    model_bytes = sum(size for shard in layout for _, size in shard)
    print(f"model: {model_bytes / MiB:.0f} MiB LLM-shaped fp16 safetensors in {len(layout)} shard(s); "
          f"{os.cpu_count()} cores; load average (1 min) {min(loads):.2f}-{max(loads):.2f} during the rounds")

    def runs(times: list[float]) -> str:
        return f"median of {len(times)}, spread {min(times):.2f}-{max(times):.2f}: {', '.join(f'{t:.2f}' for t in times)}"

    ratios = [f / t for f, t in zip(fulls, tars)]
    print(f"tar | zstd -3 -T0 && sync : {t_tar:7.2f} s   ({runs(tars)})")
    print(f"ferry export (full)        : {t_full:7.2f} s   ({runs(fulls)})")
    print(f"  time ratio ferry / tar|zstd: {t_full / t_tar:.2f}x, per round {min(ratios):.2f}-{max(ratios):.2f}x "
          "(goal <= 1.0x)")
    print(f"  CPU seconds (user+sys, median): ferry {statistics.median(CPU['ferry']):.2f}, tar|zstd "
          f"{statistics.median(CPU['tar']):.2f}: {statistics.median(CPU['ferry']) / statistics.median(CPU['tar']):.2f}x")
    print("  stages, MB/s of one thread's CPU: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
          + f"; the default budget's 4 workers together {4 * rates['worker']:.0f} (where 4 cores are free for them)")
    print(f"peak RSS of ferry export   : {rss / MiB:7.1f} MiB (goal <= 256 MiB)")
    print(f"delta v2 (10% tensors)     : {delta_bytes / MiB:7.1f} MiB = {100 * delta_bytes / full_bytes:.1f}% "
          f"of {full_bytes / MiB:.1f} MiB (goal <= 15%), {t_delta:.2f} s")
    print(f"resumed after kill at {', '.join(f'{100 * k:.0f}%' for k in kills)}: {t_resume:7.2f} s   ({runs(resumes)})")
    print(f"  time ratio resumed / full: {t_resume / t_full:.2f}x (goal <= 0.5x); CPU seconds (median) "
          f"{statistics.median(CPU['resume']):.2f} / {statistics.median(CPU['ferry']):.2f} = "
          f"{statistics.median(CPU['resume']) / statistics.median(CPU['ferry']):.2f}x")


if __name__ == "__main__":
    main()
