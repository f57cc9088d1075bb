"""Delta benchmark (issue 19, goal 1): a delta bundle's bytes against the changed bytes, beside restic.

For each model shape an LLM-shaped fp16 safetensors model is written (seeded): per layer
q/k/v/o attention projections (k and v narrower, grouped-query attention), gate/up/down MLP
projections and two norms, plus an embedding; values follow N(0, 0.02) as real weights do
(about 8% compressible, not random bytes). Then:

* **v2**, 10% of the tensors (any size, norms included, seeded) given new values: the delta
  bundle made with ``ferry export --since`` (the edge's receipt after importing v1) is printed
  against the zstd -3 size of the changed tensors (goal: at most 1.1x) and against restic
  0.14's delta (``restic backup`` of v2 on top of v1 in a compressed v2 repository: the growth
  of the repository);
* **v3**, a slight fine-tune of every tensor (every value's low mantissa byte changes): its
  delta bundle against a full bundle (goal: no larger), and restic's growth beside it;
* the manifest's bytes per GiB of model and its chunk count (the index the edge keeps).

Bytes, not time: the figures are the same on any machine. "bundle" counts pack bytes plus
manifest and signature.

Shapes (``--shapes``, default ``small,medium``):
  small   hidden 256, kv 128, mlp 1024: tensors of 64 KiB (k, v), 128 KiB (q, o), 512 KiB (MLP)
  medium  hidden 1024, kv 256, mlp 4096: 512 KiB, 2 MiB, 8 MiB
  large   hidden 4096, kv 1024, mlp 11008: 8 MiB, 32 MiB, 86 MiB (about 1 GiB with --layers 4)

Usage: python bench/delta_bench.py [--shapes small,medium] [--layers N] [--dir /tmp/ferry-delta] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import zstandard

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SHAPES = {"small": (256, 128, 1024, 24), "medium": (1024, 256, 4096, 8), "large": (4096, 1024, 11008, 4)}
VOCAB = 2048


def _high_byte_table(seed: int) -> bytes:
    """256 entries mapping a uniform byte to the high byte of an fp16 drawn from N(0, 0.02):
    the sign, exponent and top mantissa bits follow the distribution, the low byte is uniform."""
    rng = random.Random(seed)
    highs = sorted(struct.pack("<e", rng.gauss(0.0, 0.02))[1] for _ in range(1 << 16))
    # quantiles by sign-and-magnitude order do not matter for compression: the marginal does
    return bytes(highs[(i * len(highs)) // 256 + len(highs) // 512] for i in range(256))


TABLE = _high_byte_table(19)


def fp16_normal(n_values: int, rng: random.Random, highs: bytes | None = None) -> bytes:
    """``n_values`` fp16 values from N(0, 0.02) (little-endian); with ``highs`` (the high
    bytes of an existing tensor) only the low mantissa bytes are drawn anew: a slight change."""
    out = bytearray(2 * n_values)
    out[0::2] = rng.randbytes(n_values)
    out[1::2] = highs if highs is not None else rng.randbytes(n_values).translate(TABLE)
    return bytes(out)


def layout(shape: str, layers: int) -> list[tuple[str, int]]:
    """(name, number of fp16 values) in file order (safetensors writers sort by name)."""
    h, kv, mlp, _ = SHAPES[shape]
    tensors = [("model.embed_tokens.weight", VOCAB * h), ("model.norm.weight", h)]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [(p + "input_layernorm.weight", h), (p + "mlp.down_proj.weight", mlp * h),
                    (p + "mlp.gate_proj.weight", mlp * h), (p + "mlp.up_proj.weight", mlp * h),
                    (p + "post_attention_layernorm.weight", h), (p + "self_attn.k_proj.weight", kv * h),
                    (p + "self_attn.o_proj.weight", h * h), (p + "self_attn.q_proj.weight", h * h),
                    (p + "self_attn.v_proj.weight", kv * h)]
    return sorted(tensors)


def write_model(folder: Path, tensors: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, data in tensors.items():
        header[name] = {"dtype": "F16", "shape": [len(data) // 2], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for data in tensors.values():
            f.write(data)
    (folder / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))


def ferry(*args: object) -> list[str]:
    return [sys.executable, "-m", "ferry", *map(str, args)]


def sh(cmd: list[str], **env: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bundle_bytes(path: Path) -> int:
    return tree_bytes(path) - sum(p.stat().st_size for p in path.rglob(".ferry-export/*") if p.is_file())


def spec(work: Path, model: Path, version: str) -> Path:
    path = work / f"spec-{version}.yaml"
    path.write_text(f"apiVersion: ferry/v1\nkind: Bundle\nmetadata:\n  name: delta-bench\nspec:\n  models:\n"
                    f"    - name: llm\n      version: {version}\n      path: {model}\n")
    return path


def run_shape(shape: str, layers: int, work: Path) -> dict[str, float]:
    rng = random.Random(f"{shape}-{layers}")
    names = layout(shape, layers)
    v1 = {n: fp16_normal(k, rng) for n, k in names}
    changed = set(rng.sample([n for n, _ in names], max(1, round(len(names) / 10))))
    v2 = {n: fp16_normal(len(d) // 2, rng) if n in changed else d for n, d in v1.items()}
    v3 = {n: fp16_normal(len(d) // 2, rng, highs=d[1::2]) for n, d in v1.items()}
    model_bytes = sum(map(len, v1.values()))
    changed_raw = sum(len(v2[n]) for n in changed)
    cctx = zstandard.ZstdCompressor(level=3)
    changed_zstd = sum(len(cctx.compress(v2[n])) for n in changed)
    for name, tensors in (("v1", v1), ("v2", v2), ("v3", v3)):
        write_model(work / name, tensors)
    del v1, v2, v3

    keys = work / "keys"
    sh(ferry("keys", "generate", "hub", "--out", keys))
    key, pub = keys / "hub.key", keys / "hub.pub"
    sh(ferry("export", spec(work, work / "v1", "1.0.0"), "--out", work / "full1", "--key", key, "--state", work / "hub"))
    sh(ferry("import", work / "full1", "--trust", pub, "--state", work / "edge"))
    sh(ferry("receipt", "--state", work / "edge", "--out", work / "receipt.json"))
    for name, version in (("v2", "1.1.0"), ("v3", "1.2.0")):
        sh(ferry("export", spec(work, work / name, version), "--out", work / f"delta-{name}", "--key", key,
                 "--state", work / "hub", "--since", work / "receipt.json"))
    sh(ferry("export", spec(work, work / "v3", "1.2.0"), "--out", work / "full3", "--key", key, "--state", work / "hub2"))

    repo = work / "restic"
    restic_env = {"RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo), "RESTIC_CACHE_DIR": str(work / "rcache")}
    sh(["restic", "init", "--repository-version", "2"], **restic_env)
    current = work / "model"
    growth: dict[str, int] = {}
    for name in ("v1", "v2", "v3"):  # the same path each time, so restic takes the previous snapshot as parent
        shutil.rmtree(current, ignore_errors=True)
        shutil.copytree(work / name, current)
        before = tree_bytes(repo)
        sh(["restic", "backup", "--compression", "auto", "-q", str(current)], **restic_env)
        growth[name] = tree_bytes(repo) - before
    manifest = (work / "full1" / "manifest.json").read_bytes()
    chunks = len(json.loads(manifest)["chunks"])
    return {
        "model_mib": model_bytes / MiB, "tensors": len(names), "changed": len(changed),
        "changed_mib": changed_raw / MiB, "changed_zstd_mib": changed_zstd / MiB,
        "full_mib": bundle_bytes(work / "full1") / MiB,
        "delta2_mib": bundle_bytes(work / "delta-v2") / MiB, "restic2_mib": growth["v2"] / MiB,
        "full3_mib": bundle_bytes(work / "full3") / MiB,
        "delta3_mib": bundle_bytes(work / "delta-v3") / MiB, "restic3_mib": growth["v3"] / MiB,
        "manifest_kib_per_gib": len(manifest) / KiB / (model_bytes / GiB), "chunks": chunks,
        "chunks_per_gib": chunks / (model_bytes / GiB),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="small,medium")
    ap.add_argument("--layers", type=int, default=0, help="layers per model (default: per shape)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-delta"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    for shape in args.shapes.split(","):
        if shape not in SHAPES:
            raise SystemExit(f"unknown shape {shape!r}: one of {', '.join(SHAPES)}")
    for shape in args.shapes.split(","):
        work = args.dir / shape
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            r = run_shape(shape, args.layers or SHAPES[shape][3], work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        print(f"[{shape}] model {r['model_mib']:.1f} MiB, {r['tensors']:.0f} tensors; "
              f"{r['changed']:.0f} changed ({r['changed_mib']:.2f} MiB raw, {r['changed_zstd_mib']:.2f} MiB zstd -3)")
        print(f"  10% changed: ferry delta {r['delta2_mib']:.2f} MiB = {r['delta2_mib'] / r['changed_zstd_mib']:.3f}x "
              f"changed (goal <= 1.1x), {100 * r['delta2_mib'] / r['full_mib']:.1f}% of full; "
              f"restic delta {r['restic2_mib']:.2f} MiB = {r['restic2_mib'] / r['changed_zstd_mib']:.3f}x")
        print(f"  fine-tune:   ferry delta {r['delta3_mib']:.2f} MiB = {r['delta3_mib'] / r['full3_mib']:.3f}x "
              f"full {r['full3_mib']:.2f} MiB (goal <= 1.0x); restic delta {r['restic3_mib']:.2f} MiB")
        print(f"  manifest: {r['manifest_kib_per_gib']:.1f} KiB per GiB of model, {r['chunks']:.0f} chunks "
              f"({r['chunks_per_gib']:.0f} per GiB)", flush=True)


if __name__ == "__main__":
    main()
