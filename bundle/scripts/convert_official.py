"""Convert the official MoME release (six nnU-Net checkpoints) into this bundle's ``models/model.pt``.

The reference implementation saves the gate as ``<name>.pth`` and the experts as ``<name>1.pth`` ... ``<name>5.pth``
(order T1, T1c, T2, FLAIR, DWI), each an nnU-Net checkpoint with the weights under ``network_weights``. Every file
is named explicitly and every key must match: a missing expert or a shape mismatch is an error, not a warning.

Run from ``bundle/``::

    python -m scripts.convert_official --src DIR --out models/model.pt [--name checkpoint_best] [--preset paper]

nnU-Net checkpoints are pickles: convert only files from a source you trust.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from scripts.atomic import save_torch
from scripts.mome import MODALITIES, MoME

__all__ = ["convert", "load_nnunet_weights"]


def load_nnunet_weights(path: Path) -> dict[str, torch.Tensor]:
    """The ``network_weights`` of one nnU-Net checkpoint, without DDP / torch.compile prefixes."""
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    if not isinstance(ckpt, Mapping) or "network_weights" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{path}: expected an nnU-Net checkpoint with key 'network_weights', found {keys}")
    weights = dict(ckpt["network_weights"])
    for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
        consume_prefix_in_state_dict_if_present(weights, prefix)
    return weights


def convert(src: str | Path, name: str = "checkpoint_best", preset: str = "paper") -> MoME:
    """Build a :class:`MoME` holding the official gate and five experts found in ``src``."""
    src = Path(src)
    model = MoME(preset=preset, modalities=MODALITIES)
    files = {"gate": src / f"{name}.pth"}
    files.update({f"experts.{k}": src / f"{name}{k + 1}.pth" for k in range(len(MODALITIES))})
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing official checkpoint file(s): {', '.join(missing)}")
    for prefix, path in files.items():
        module = model.get_submodule(prefix)
        weights = load_nnunet_weights(path)
        expected = module.state_dict()
        unexpected = sorted(set(weights) - set(expected))
        absent = sorted(set(expected) - set(weights))
        wrong = sorted(k for k in set(weights) & set(expected) if weights[k].shape != expected[k].shape)
        if unexpected or absent or wrong:
            details = [
                f"{label}: {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                for label, keys in (
                    ("unexpected keys", unexpected),
                    ("missing keys", absent),
                    ("shape mismatch", wrong),
                )
                if keys
            ]
            raise ValueError(f"{path} does not fit the '{preset}' preset {prefix}: " + "; ".join(details))
        module.load_state_dict(weights, strict=True)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="folder with <name>.pth (gate) and <name>1..5.pth (experts)")
    parser.add_argument("--out", default="models/model.pt", help="bundle checkpoint to write")
    parser.add_argument("--name", default="checkpoint_best", help="checkpoint file stem (default: checkpoint_best)")
    parser.add_argument("--preset", default="paper", help="network preset the checkpoints were trained with")
    args = parser.parse_args(argv)
    model = convert(args.src, args.name, args.preset)
    save_torch({"model": model.state_dict()}, args.out)
    print(f"wrote {args.out}: gate + {len(model.experts)} experts ({args.preset} preset)")


if __name__ == "__main__":
    main()
