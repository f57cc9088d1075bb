"""Publishing benchmark (issue #14): the cost of publishing a model version into EDGE/oci.

Times ``importer.apply.modelpack.publish_model`` into a fresh layout on the same file system
as the model (so ModelPack layers are hard links), with and without the modelcar, against
copying the model's bytes once with fsync (the least a modelcar, a second copy, can cost).
Best of ``--rounds`` each, alternating (the machine is shared).

Usage: python bench/publish_bench.py [--mib 256] [--dir /tmp/ferry-publish-bench] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from importer.apply.modelpack import publish_model  # noqa: E402

MiB = 1 << 20


def make_model(folder: Path, mib: int) -> None:
    folder.mkdir(parents=True)
    rnd = random.Random(7)
    with open(folder / "model.safetensors", "wb") as f:
        header = b'{"w":{"dtype":"F16","shape":[%d],"data_offsets":[0,%d]}}' % (mib * MiB // 2, mib * MiB)
        f.write(len(header).to_bytes(8, "little") + header)
        for _ in range(mib):
            f.write(rnd.randbytes(MiB))
    (folder / "config.json").write_text('{"dim": 8}')


def copy_once(src: Path, dst: Path) -> None:
    dst.mkdir()
    for p in sorted(src.iterdir()):
        with open(p, "rb") as a, open(dst / p.name, "wb") as b:
            shutil.copyfileobj(a, b, MiB)
            b.flush()
            os.fsync(b.fileno())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-publish-bench"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    model = args.dir / "model"
    make_model(model, args.mib)
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for what in ("modelpack+modelcar", "modelpack only", "one copy + fsync"):
            target = args.dir / f"out-{r}-{what.split()[0]}"
            start = time.perf_counter()
            if what == "one copy + fsync":
                copy_once(model, target)
            else:
                publish_model(model, "bench", "1.0.0", layout=target, modelcar=what == "modelpack+modelcar")
            best[what] = min(best.get(what, 1e9), time.perf_counter() - start)
            shutil.rmtree(target)
    for what, seconds in best.items():
        print(f"{what:>20}: {seconds:.3f} s for {args.mib} MiB")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
