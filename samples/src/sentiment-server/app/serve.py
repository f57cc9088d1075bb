#!/usr/bin/env python3
"""Sentiment inference server of ferry's sample image (standard library only).

Reads the model that ferry installs at the edge (``MODEL_DIR``, default /models/sentiment: the
model store's ``current`` version, mounted by the sample Deployment) and answers

    POST /predict  {"text": "the update was great"}  ->  {"label": "positive", "scores": {...}}
    GET  /healthz                                      ->  {"model": "sentiment", "version": "1.2.0"}

``serve.py --classify TEXT`` prints one prediction and exits (used by ferry's tests).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FORMATS = {"F16": ("e", 2), "F32": ("f", 4)}
WORDS = re.compile(r"\w+|[^\w\s]+")  # the tokenizer's Whitespace pre-tokenizer


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, tuple[list[int], list[float]]]]:
    """Parse a safetensors file: (metadata, {name: (shape, flat values)})."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        code, width = FORMATS[info["dtype"]]
        start, end = info["data_offsets"]
        tensors[name] = (info["shape"], list(struct.unpack(f"<{(end - start) // width}{code}", data[start:end])))
    return metadata, tensors


class Model:
    def __init__(self, model_dir: Path) -> None:
        self.metadata, self.tensors = read_safetensors(model_dir / "model.safetensors")
        self.config = json.loads((model_dir / "config.json").read_text())
        tok = json.loads((model_dir / "tokenizer.json").read_text())["model"]
        self.vocab, self.unk = tok["vocab"], tok["vocab"][tok["unk_token"]]

    def _matvec(self, name: str, x: list[float]) -> list[float]:
        (rows, cols), w = self.tensors[name]
        return [sum(w[r * cols + c] * x[c] for c in range(cols)) for r in range(rows)]

    def predict(self, text: str) -> dict[str, object]:
        ids = [self.vocab.get(word, self.unk) for word in WORDS.findall(text.lower())] or [self.unk]
        (_, hidden), emb = self.tensors["embeddings.word_embeddings.weight"]
        pooled = [sum(emb[i * hidden + d] for i in ids) / len(ids) for d in range(hidden)]
        bias = self.tensors["encoder.dense.bias"][1]
        h = [math.tanh(v + b) for v, b in zip(self._matvec("encoder.dense.weight", pooled), bias)]
        logits = [v + b for v, b in zip(self._matvec("classifier.weight", h), self.tensors["classifier.bias"][1])]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        labels = [self.config["id2label"][str(i)] for i in range(len(logits))]
        scores = {label: e / sum(exps) for label, e in zip(labels, exps)}
        return {"label": max(scores, key=scores.__getitem__), "scores": scores}


def serve(model: Model, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/healthz":
                self._reply(200, {"model": model.metadata.get("name"), "version": model.metadata.get("version")})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/predict":
                return self._reply(404, {"error": "not found"})
            try:
                body = json.loads(self.rfile.read(min(int(self.headers.get("Content-Length", 0)), 65536)))
                self._reply(200, model.predict(str(body["text"])))
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"error": 'send {"text": "..."}'})

    ThreadingHTTPServer(("", port), Handler).serve_forever()


def main() -> None:
    model = Model(Path(os.environ.get("MODEL_DIR", "/models/sentiment")))
    if len(sys.argv) == 3 and sys.argv[1] == "--classify":
        print(json.dumps(model.predict(sys.argv[2]), sort_keys=True))
        return
    serve(model, int(os.environ.get("PORT", "8080")))


if __name__ == "__main__":
    main()
