#!/usr/bin/env python3
"""Write ferry's sample model: a tiny bag-of-words sentiment classifier, byte for byte the same
on every run.

    python samples/make_model.py [--out DIR]     # default: samples/models/sentiment
    python samples/make_model.py --version 1.3.0 --out DIR   # a "fine-tuned" next version

Writes ``model.safetensors`` (fp16 embeddings and encoder, fp32 head; about 290 KiB),
``config.json`` and ``tokenizer.json`` (a word-level tokenizer in the Hugging Face
``tokenizers`` format). No numpy, no torch, no downloads: the safetensors file is written by
hand (8-byte little-endian header length, JSON header, raw little-endian data) and the weights
come from a seeded splitmix64 generator, so the same bytes come out on any machine. The
weights are random except for the sentiment words, whose embeddings are nudged so that
``samples/images/sentiment-server`` (app/serve.py) gives sensible answers. Another
``--version`` keeps the embeddings and the encoder weight byte-identical and retrains only the
small head (classifier and encoder bias), as a fine-tune would: a model for trying upgrades
and delta bundles (``ferry export --since``). At 290 KiB the file is one ferry chunk, so a
delta carries it whole; tensor-level savings need real-size models (``bench/``).
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

SEED = 0x5EED_F3A1
HIDDEN = 128
LABELS = ["negative", "positive"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
POSITIVE = ["good", "great", "excellent", "love", "happy", "fine", "fast", "reliable", "clean",
            "amazing", "nice", "works", "stable", "smooth", "best", "perfect", "helpful", "calm"]
NEGATIVE = ["bad", "terrible", "awful", "hate", "sad", "broken", "slow", "flaky", "dirty",
            "horrible", "poor", "fails", "crash", "noisy", "worst", "useless", "angry", "late"]
NEUTRAL = ["the", "a", "an", "is", "was", "it", "this", "that", "and", "but", "not", "very",
           "model", "disk", "update", "site", "edge", "hub", "image", "cluster", "i", "we", "so"]
VOCAB_SIZE = 1024  # the rest is [unusedN], as BERT-style vocabularies reserve room

# safetensors dtype name -> (struct code, bytes per element)
DTYPES = {"F16": ("e", 2), "F32": ("f", 4)}


class SplitMix64:
    """Tiny, well-known PRNG (Steele et al. 2014); stable across Python versions, unlike gauss()."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFF_FFFF_FFFF_FFFF

    def next(self) -> int:
        self.state = (self.state + 0x9E37_79B9_7F4A_7C15) & 0xFFFF_FFFF_FFFF_FFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & 0xFFFF_FFFF_FFFF_FFFF
        z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & 0xFFFF_FFFF_FFFF_FFFF
        return z ^ (z >> 31)

    def uniform(self, bound: float) -> float:
        """A float in [-bound, bound), from the top 53 bits (exactly representable)."""
        return ((self.next() >> 11) / float(1 << 53) * 2.0 - 1.0) * bound


def vocabulary() -> list[str]:
    words = SPECIALS + POSITIVE + NEGATIVE + NEUTRAL
    return words + [f"[unused{i}]" for i in range(VOCAB_SIZE - len(words))]


VERSION = "1.2.0"


def weights(version: str = VERSION) -> dict[str, tuple[str, list[int], list[float]]]:
    """name -> (dtype, shape, values), Kaiming-uniform-like scales; deterministic per version."""
    rng = SplitMix64(SEED)
    vocab = vocabulary()

    def tensor(shape: list[int], bound: float) -> list[float]:
        n = 1
        for d in shape:
            n *= d
        return [rng.uniform(bound) for _ in range(n)]

    emb = tensor([VOCAB_SIZE, HIDDEN], 0.1)
    # Sentiment direction: dimension 0 carries polarity, so the classifier below can read it.
    for word, sign in [(w, 1.0) for w in POSITIVE] + [(w, -1.0) for w in NEGATIVE]:
        emb[vocab.index(word) * HIDDEN] = sign
    dense = tensor([HIDDEN, HIDDEN], 1.0 / HIDDEN ** 0.5)
    dense[0] = 1.0  # keep the polarity dimension through the encoder (row 0, column 0)
    dense_bias = [0.0] * HIDDEN
    head = tensor([len(LABELS), HIDDEN], 0.01)
    if version != VERSION:  # a fine-tune: only the small tensors move
        tuned = SplitMix64(SEED ^ int.from_bytes(version.encode("utf-8")[:8], "little"))
        dense_bias = [tuned.uniform(0.01) for _ in range(HIDDEN)]
        head = [v + tuned.uniform(0.01) for v in head]
    head[0], head[HIDDEN] = -4.0, 4.0  # negative reads -polarity, positive reads +polarity
    return {
        "embeddings.word_embeddings.weight": ("F16", [VOCAB_SIZE, HIDDEN], emb),
        "encoder.dense.weight": ("F16", [HIDDEN, HIDDEN], dense),
        "encoder.dense.bias": ("F32", [HIDDEN], dense_bias),
        "classifier.weight": ("F32", [len(LABELS), HIDDEN], head),
        "classifier.bias": ("F32", [len(LABELS)], [0.0] * len(LABELS)),
    }


def safetensors_bytes(tensors: dict[str, tuple[str, list[int], list[float]]],
                      metadata: dict[str, str]) -> bytes:
    """Encode tensors as safetensors: u64le header size, JSON header, then the data, in order."""
    header: dict[str, object] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, (dtype, shape, values) in tensors.items():
        code, width = DTYPES[dtype]
        data = struct.pack(f"<{len(values)}{code}", *values)
        assert len(data) == len(values) * width
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad so the data starts 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def config() -> dict[str, object]:
    return {
        "architectures": ["BagOfWordsSentimentClassifier"],
        "model_type": "ferry-sample-bow",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN,
        "hidden_act": "tanh",
        "pooling": "mean",
        "num_labels": len(LABELS),
        "id2label": {str(i): label for i, label in enumerate(LABELS)},
        "label2id": {label: i for i, label in enumerate(LABELS)},
        "torch_dtype": "float16",
        "ferry_sample": {"seed": SEED, "generator": "samples/make_model.py"},
    }


def tokenizer() -> dict[str, object]:
    """A word-level tokenizer in the ``tokenizers`` JSON format (lowercase, split on whitespace)."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(SPECIALS)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(vocabulary())}, "unk_token": "[UNK]"},
    }


def write(out: Path, version: str = VERSION) -> list[Path]:
    """Write the three files into ``out`` and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "model.safetensors": safetensors_bytes(weights(version), {"format": "pt", "name": "sentiment", "version": version}),
        "config.json": (json.dumps(config(), indent=2, sort_keys=True) + "\n").encode("utf-8"),
        "tokenizer.json": (json.dumps(tokenizer(), indent=1) + "\n").encode("utf-8"),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    return [out / name for name in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "models" / "sentiment")
    parser.add_argument("--version", default=VERSION, help=f"model version (default {VERSION}, the committed one)")
    args = parser.parse_args()
    for path in write(args.out, args.version):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
