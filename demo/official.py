"""A release folder in the official MoME format, with random weights: what ``scripts.convert_official`` reads.

The reference implementation (an nnU-Net v2.2 fork) saves the gate as ``checkpoint_best.pth`` and the experts as
``checkpoint_best1..5.pth`` (T1, T1c, T2, FLAIR, DWI), each an nnU-Net checkpoint with the weights under
``network_weights``, next to nnU-Net's ``plans.json`` and ``dataset.json``. The real weights are downloaded by
users; this writes files of the same layout for the tests and for trying the converter (``python -m
demo.official --out DIR``).

    python -m demo.official --out release [--preset paper|small]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scripts.mome import MODALITIES, PRESETS, build_unet

__all__ = ["plans", "write_nnunet_model", "write_release"]


def plans(preset: str = "paper", patch: int = 128) -> dict:
    """nnU-Net v2.2's ``plans.json`` for a 3d_fullres PlainConvUNet of ``preset``, z-score over the whole box."""
    shape = PRESETS[preset]
    n = len(shape["features_per_stage"])
    return {
        "dataset_name": "Dataset011_009SingleLableAbnomal",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [160, 196, 160],
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "image_reader_writer": "SimpleITKIO",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 10.0,
                "mean": 0.5,
                "median": 0.4,
                "min": -2.0,
                "percentile_00_5": -1.5,
                "percentile_99_5": 5.0,
                "std": 1.0,
            }  # fmt: skip
        },
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [patch] * 3,
                "median_image_size_in_voxels": [160, 196, 160],
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "UNet_class_name": "PlainConvUNet",
                "UNet_base_num_features": shape["features_per_stage"][0],
                "n_conv_per_stage_encoder": [2] * n,
                "n_conv_per_stage_decoder": [2] * (n - 1),
                "num_pool_per_axis": [n - 1] * 3,
                "pool_op_kernel_sizes": [[s] * 3 for s in shape["strides"]],
                "conv_kernel_sizes": [[3, 3, 3]] * n,
                "unet_max_num_features": shape["features_per_stage"][-1],
                "batch_dice": False,
            }
        },
    }


def dataset_json() -> dict:
    return {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 4132,
        "file_ending": ".nii.gz",
    }


def write_release(folder: str | Path, preset: str = "paper", seed: int = 0, plans_files: bool = True) -> Path:
    """Six nnU-Net checkpoints (random weights) and, with ``plans_files``, ``plans.json`` + ``dataset.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = PRESETS[preset]["features_per_stage"][0]
    nets = {"checkpoint_best.pth": (1 + len(MODALITIES) * stem, 2 * len(MODALITIES))}
    nets.update({f"checkpoint_best{k + 1}.pth": (1, 2) for k in range(len(MODALITIES))})
    for i, (name, (cin, cout)) in enumerate(nets.items()):
        torch.manual_seed(seed + i)
        net = build_unet(cin, cout, preset)
        torch.save(
            {
                "network_weights": net.state_dict(),
                "trainer_name": "nnUNetTrainer",
                "current_epoch": 800,
                "init_args": {"configuration": "3d_fullres", "fold": "MoME"},
                "inference_allowed_mirroring_axes": (0, 1, 2),
            },
            folder / name,
        )
    if plans_files:
        (folder / "plans.json").write_text(json.dumps(plans(preset), indent=2))
        (folder / "dataset.json").write_text(json.dumps(dataset_json(), indent=2))
    return folder


def write_nnunet_model(folder: str | Path, network: torch.nn.Module, preset: str | None = None) -> Path:
    """An nnU-Net v2 trained-model folder (``plans.json``, ``dataset.json``, ``fold_0/checkpoint_final.pth``) for a
    single ``PlainConvUNet`` of this project: what ``nnUNetPredictor.initialize_from_trained_model_folder`` reads."""
    folder = Path(folder)
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    if preset is None:
        widths = [stage[0].convs[0].conv.out_channels for stage in network.encoder.stages]
        preset = next(n for n, p in PRESETS.items() if list(p["features_per_stage"]) == widths)
    (folder / "plans.json").write_text(json.dumps(plans(preset), indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json(), indent=2))
    torch.save(
        {
            "network_weights": network.state_dict(),
            "trainer_name": "nnUNetTrainer",
            "init_args": {"configuration": "3d_fullres", "fold": 0},
            "inference_allowed_mirroring_axes": (0, 1, 2),
            "current_epoch": 1000,
        },
        folder / "fold_0" / "checkpoint_final.pth",
    )
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    args = parser.parse_args(argv)
    write_release(args.out, args.preset)
    print(f"wrote {args.out}: checkpoint_best.pth (gate), checkpoint_best1..5.pth (experts), plans.json, dataset.json")


if __name__ == "__main__":
    main()
