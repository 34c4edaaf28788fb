"""Shared checkpoint conventions: a model is a directory with a config, safetensors weights and a
``molfusion.json`` that names the encoder and carries its version string (the embedding-cache key)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

META_FILE = "molfusion.json"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """Stable short digest of the weights: any change of a parameter gives a new version."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu", torch.float16).contiguous()
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()[:12]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (training tables, pretraining corpora)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_meta(directory: Path, name: str, kind: str, version: str, extra: dict | None = None) -> None:
    meta = {"name": name, "kind": kind, "version": version, **(extra or {})}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(directory: Path) -> dict:
    path = directory / META_FILE
    return json.loads(path.read_text()) if path.exists() else {}
