"""Turn a trained ``model.pt`` into the released file: half precision, its record kept, md5 into large_files.yml.

Model Zoo keeps no file over 25 MB in git; the small preset's 7 M parameters take 14 MB in float16. Loading casts
them back to float32 (``load_state_dict`` copies into the network's own dtype), so the released file serves and
fine-tunes like the float32 one it came from (max logit difference on a phantom: see the model card).

    python -m demo.release --weights TRAINED/model.pt [--out bundle/models/model.pt]
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import torch

from demo.commands import BUNDLE
from scripts.atomic import atomic_path, save_torch
from scripts.record import KEY

__all__ = ["LIMIT_BYTES", "md5", "release"]

#: Model Zoo's limit for a file kept in git
LIMIT_BYTES = 25 * 1024 * 1024


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release(weights: Path, out: Path) -> str:
    """Write the half-precision copy of ``weights`` to ``out``; return its md5 (also written to large_files.yml)."""
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    if KEY not in checkpoint:
        raise SystemExit(f"{weights} has no record ('{KEY}'): release only weights this project trained")
    # nnU-Net's modules register one tensor under several keys (conv.weight = all_modules.0.weight, the decoder's
    # encoder.*): cast each tensor once, so that the aliases share one storage in the file as they did before
    halves: dict[tuple[int, tuple], torch.Tensor] = {}
    state = {}
    for key, value in checkpoint["model"].items():
        alias = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), tuple(value.stride()))
        if alias not in halves:
            halves[alias] = value.half() if value.is_floating_point() else value
        state[key] = halves[alias]
    save_torch({"model": state, KEY: checkpoint[KEY]}, out)
    size = out.stat().st_size
    if size > LIMIT_BYTES:
        out.unlink()
        raise SystemExit(f"{out}: {size / 2**20:.1f} MB is over Model Zoo's 25 MB limit for a file in git")
    digest = md5(out)
    if out.is_relative_to(BUNDLE):  # the bundle's own file: its hash goes where Model Zoo looks for it
        _record_hash(BUNDLE / "large_files.yml", out.relative_to(BUNDLE).as_posix(), digest)
    return digest


def _record_hash(yml: Path, path: str, digest: str) -> None:
    text = yml.read_text()
    # the empty url: the file is in git; Model Zoo's large-file step checks the md5 and downloads nothing
    entry = f'large_files:\n  - path: "{path}"\n    url: ""\n    hash_val: "{digest}"\n    hash_type: "md5"\n'
    with atomic_path(yml) as tmp:
        tmp.write_text(re.sub(r"large_files:.*\Z", entry, text, flags=re.S))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="model.pt written by train.json")
    parser.add_argument("--out", type=Path, default=BUNDLE / "models" / "model.pt")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    digest = release(args.weights, args.out.resolve())
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MB, md5 {digest})")


if __name__ == "__main__":
    main()
