"""Generate a model family shaped like Wan2.2 (T2V/I2V), scaled down to fit a benchmark run.

Per model: safetensors shards with valid headers, a large T5 encoder `.pth` shared by both models,
a VAE `.pth` shared by both, tokenizer and config files, and a couple of hundred small files.
Random bytes, so nothing compresses or deduplicates by accident.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
from pathlib import Path

MiB = 1 << 20


def random_file(path: Path, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(rnd.randbytes(n))
            left -= n


def _safetensors(path: Path, size: int, seed: int) -> None:
    n_tensors = 16
    elems = (size // n_tensors) // 2  # BF16
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for i in range(n_tensors):
        header[f"blocks.{i}.attn.weight"] = {"dtype": "BF16", "shape": [elems], "data_offsets": [off, off + 2 * elems]}
        off += 2 * elems
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        left = off
        while left:
            n = min(left, 8 * MiB)
            f.write(rnd.randbytes(n))
            left -= n


def generate(root: Path, model: str, *, shard_mib: int, shards: int, t5_mib: int, vae_mib: int, small: int) -> Path:
    d = root / model
    seed = sum(map(ord, model))
    for i in range(shards):
        _safetensors(d / f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors", shard_mib * MiB, seed * 100 + i)
    random_file(d / "models_t5_umt5-xxl-enc-bf16.pth", t5_mib * MiB, 7)  # shared across models
    random_file(d / "Wan2.1_VAE.pth", vae_mib * MiB, 11)  # shared across models
    (d / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 5120, "model": model}))
    tok = d / "google" / "umt5-xxl"
    tok.mkdir(parents=True, exist_ok=True)
    (tok / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    random_file(tok / "spiece.model", 4 * MiB, 13)
    rnd = random.Random(seed)
    for i in range(small):
        random_file(d / "assets" / f"{i // 50:02d}" / f"example_{i:03d}.bin", rnd.randint(1_000, 64_000), seed + i)
    return d


def add_shape_arguments(ap: argparse.ArgumentParser, *, shard_mib: int = 256, t5_mib: int = 512) -> None:
    """The fixture's size options, shared by every benchmark that generates it."""
    ap.add_argument("--shard-mib", type=int, default=shard_mib)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--t5-mib", type=int, default=t5_mib)
    ap.add_argument("--vae-mib", type=int, default=64)
    ap.add_argument("--small", type=int, default=200)


def generate_from_args(root: Path, model: str, a: argparse.Namespace) -> Path:
    return generate(root, model, shard_mib=a.shard_mib, shards=a.shards, t5_mib=a.t5_mib, vae_mib=a.vae_mib,
                    small=a.small)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path)
    add_shape_arguments(ap)
    a = ap.parse_args()
    for model in ("t2v-A14B", "i2v-A14B"):
        generate_from_args(a.root, model, a)


if __name__ == "__main__":
    main()
