"""Convert the official MoME release (six nnU-Net checkpoints, plans, dataset) into this bundle's ``model.pt``.

Gate ``<name>.pth``, experts ``<name>1.pth`` ... ``<name>5.pth`` (T1, T1c, T2, FLAIR, DWI), ``plans.json`` (nnU-Net
v2.2+) and ``dataset.json``: every key must match and every difference of the plan from what the bundle reproduces is
listed before anything is written. nnU-Net checkpoints are pickles: convert only trusted files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from scripts.atomic import save_torch
from scripts.errors import InputError
from scripts.mome import MODALITIES, PRESETS, MoME
from scripts.record import KEY, Record

#: What the reference pipeline's plan must say for the bundle to reproduce it.
PATCH, SPACING = [128, 128, 128], [1.0, 1.0, 1.0]
#: The reference pipeline's preprocessing: the converted weights' record, with the network.
REFERENCE = {"gate_activation": None, "spacing": 1.0, "register": True, "normalization": "box", "patch_size": PATCH}


def load_nnunet_weights(path: Path) -> dict[str, torch.Tensor]:
    """The ``network_weights`` of one nnU-Net checkpoint, without DDP / torch.compile prefixes."""
    if not path.is_file():
        raise InputError(f"official checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    if not isinstance(ckpt, Mapping) or "network_weights" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise InputError(f"{path}: expected an nnU-Net checkpoint with key 'network_weights', found {keys}")
    weights = dict(ckpt["network_weights"])
    for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
        consume_prefix_in_state_dict_if_present(weights, prefix)
    return weights


def _architecture(config: Mapping) -> tuple[int, list[int]]:
    """Stages and features per stage, from a v2.2 plan (``UNet_base_num_features``) or a later one (``arch_kwargs``)."""
    if arch := config.get("architecture", {}).get("arch_kwargs"):
        return int(arch["n_stages"]), [int(f) for f in arch["features_per_stage"]]
    n = len(config["pool_op_kernel_sizes"])
    base, top = int(config["UNet_base_num_features"]), int(config["unet_max_num_features"])
    return n, [min(base * 2**i, top) for i in range(n)]


def check_plans(src: Path, preset: str) -> None:
    """The release's ``plans.json`` / ``dataset.json`` (when present) describe what the bundle reproduces."""
    differences = []
    plans_file, dataset_file = src / "plans.json", src / "dataset.json"
    if plans_file.is_file():
        try:
            config = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
            n_stages, features = _architecture(config)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{plans_file}: not an nnU-Net plans file with a 3d_fullres configuration ({e})") from e
        expected = PRESETS[preset]["features_per_stage"]
        for what, got, want in (
            ("patch_size", list(config.get("patch_size", [])), PATCH),
            ("spacing", [float(s) for s in config.get("spacing", [])], SPACING),
            ("stages", n_stages, len(expected)),
            ("features per stage", features, list(expected)),
            ("normalization_schemes", config.get("normalization_schemes"), ["ZScoreNormalization"]),
            ("use_mask_for_norm", config.get("use_mask_for_norm"), [False]),
        ):
            if got != want:
                differences.append(f"{what} {got} (the bundle reproduces {want})")
    if dataset_file.is_file():
        try:
            labels = json.loads(dataset_file.read_text())["labels"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{dataset_file}: not an nnU-Net dataset.json with 'labels' ({e})") from e
        if len(labels) != 2:
            differences.append(f"{dataset_file.name} labels {labels} (the bundle has 2 classes: background, lesion)")
    if differences:
        raise InputError(f"{src}: the release cannot be reproduced by this bundle: " + "; ".join(differences))


def convert(src: str | Path, name: str = "checkpoint_best", preset: str = "paper") -> MoME:
    """Build a :class:`MoME` holding the official gate and five experts found in ``src``."""
    src = Path(src)
    if not src.is_dir():
        raise InputError(f"--src {src}: not a folder")
    if preset not in PRESETS:
        raise InputError(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    check_plans(src, preset)
    model = MoME(preset=preset, modalities=MODALITIES)
    files = {"gate": src / f"{name}.pth"} | {f"experts.{k}": src / f"{name}{k + 1}.pth" for k in range(len(MODALITIES))}
    if missing := [str(p) for p in files.values() if not p.is_file()]:
        raise InputError(f"missing official checkpoint file(s): {', '.join(missing)}")
    for prefix, path in files.items():
        module = model.get_submodule(prefix)
        weights, expected = load_nnunet_weights(path), module.state_dict()
        unexpected = sorted(set(weights) - set(expected))
        absent = sorted(set(expected) - set(weights))
        wrong = sorted(k for k in set(weights) & set(expected) if weights[k].shape != expected[k].shape)
        if unexpected or absent or wrong:
            found = (("unexpected keys", unexpected), ("missing keys", absent), ("shape mismatch", wrong))
            details = [f"{label}: {keys[:5]}{' ...' if len(keys) > 5 else ''}" for label, keys in found if keys]
            raise InputError(f"{path} does not fit the '{preset}' preset {prefix}: " + "; ".join(details))
        module.load_state_dict(weights, strict=True)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.convert_official", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--src", required=True, help="folder with <name>.pth (gate), <name>1..5.pth (experts), plans")
    parser.add_argument("--out", default="models/model.pt", help="bundle checkpoint to write")
    parser.add_argument("--name", default="checkpoint_best", help="checkpoint file stem (default: checkpoint_best)")
    parser.add_argument("--preset", default="paper", help="network preset the checkpoints were trained with")
    args = parser.parse_args(argv)
    try:
        model = convert(args.src, args.name, args.preset)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    record = Record(network="MoME", preset=args.preset, modalities=list(MODALITIES), num_classes=2, **REFERENCE)
    save_torch({"model": model.state_dict(), KEY: record.state_dict()}, args.out)
    print(f"wrote {args.out}: gate + {len(model.experts)} experts ({args.preset} preset, box normalisation)")


if __name__ == "__main__":
    main()
