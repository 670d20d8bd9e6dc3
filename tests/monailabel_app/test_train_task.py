"""The fine-tuning task's parts: modality per image, splits, checkpoint loading, overrides, multi-GPU plumbing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monailabel.tasks.train.bundle import BundleTrainTask

from monailabel_app.lib.options import AppOptions
from monailabel_app.lib.train import MoMETrainTask, modality_of, multi_gpu_options

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundle"


@pytest.fixture
def task(tmp_path: Path) -> MoMETrainTask:
    options = AppOptions.from_conf(ROOT / "monailabel_app", {"model_dir": str(tmp_path / "model"), "weights": "none"})
    return MoMETrainTask(options)


@pytest.mark.parametrize(
    ("path", "info", "expected"),
    [
        ("/s/case7_flair.nii.gz", {}, "FLAIR"),
        ("/s/BraTS2021_00000_t1ce.nii.gz", {}, "T1c"),
        ("/s/sub-01_ses-1_T1w.nii.gz", {}, "T1"),
        ("/s/FLAIR.nii", {}, "FLAIR"),
        ("/s/patient_dwi.nrrd", {}, "DWI"),
        ("/s/case_007.nii.gz", {}, None),
        ("/s/scan.nii.gz", {}, None),
        ("/s/case7_flair.nii.gz", {"modality": "t2"}, "T2"),  # the datastore's info wins over the name
        ("/s/case7.nii.gz", {"modality": "unknown"}, None),
    ],
)
def test_modality_from_image_info_then_file_name(path: str, info: dict, expected: str | None) -> None:
    assert modality_of(path, info, BUNDLE) == expected


def test_a_misspelt_modality_in_the_image_info_is_an_error() -> None:
    with pytest.raises(ValueError, match="flare"):
        modality_of("/s/case7.nii.gz", {"modality": "flare"}, BUNDLE)


def test_training_items_carry_the_modality_when_known(task: MoMETrainTask, studies: Path, make_case) -> None:
    from monailabel.datastore.local import LocalDatastore

    datastore = LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    with pytest.raises(RuntimeError, match="no image in the datastore has a final label"):
        task._fetch_datalist({}, datastore)
    for i, name in enumerate(("case0_flair", "case2")):
        _, label = make_case(studies.parent / "labels_src", name, seed=i)
        datastore.save_label(name, str(label), "final", {})
    datastore.update_image_info("case2", {"modality": "t2w"})
    items = {Path(i["image"]).name: i for i in task._fetch_datalist({}, datastore)}
    assert set(items) == {"case0_flair.nii.gz", "case2.nii.gz"}  # case1_t1ce has no label
    assert items["case0_flair.nii.gz"]["modality"] == "FLAIR" and items["case2.nii.gz"]["modality"] == "T2"
    assert Path(items["case2.nii.gz"]["label"]).is_file()


def test_split_always_leaves_a_validation_set(task: MoMETrainTask) -> None:
    one = [{"image": "a", "label": "la"}]
    assert task._partition_datalist(one, {"val_split": 0.2}) == (one, one)
    five = [{"image": c, "label": f"l{c}"} for c in "abcde"]
    train, val = task._partition_datalist(five, {"val_split": 0.2})
    assert len(train) == 4 and len(val) == 1 and not {d["image"] for d in train} & {d["image"] for d in val}
    assert task._partition_datalist(five, {"val_split": 0.2}) == (train, val)  # deterministic
    train, val = task._partition_datalist(five, {"val_split": 0.0})
    assert train == five and val == five


def test_pretrained_false_does_not_crash_and_loads_nothing(task: MoMETrainTask) -> None:
    with pytest.raises(TypeError):  # the stock task: os.path.exists(None)
        BundleTrainTask._load_checkpoint(task, "/x/model.pt", False, [])
    task._pretrained = task._pretrained_weights({"pretrained": False})
    handlers: list = []
    task._load_checkpoint("/x/model.pt", False, handlers)
    assert handlers == []


def test_pretrained_weights_are_loaded_strictly_on_cpu(tmp_path: Path, task: MoMETrainTask, small_weights) -> None:
    task.options.weights = small_weights
    task._pretrained = task._pretrained_weights({})
    handlers: list = []
    task._load_checkpoint("/ignored/model.pt", True, handlers)
    assert handlers[0]["_target_"] == "CheckpointLoader"
    assert handlers[0]["load_path"] == str(small_weights)
    assert handlers[0]["strict"] is True and handlers[0]["map_location"] == "cpu"


def test_overrides_keep_every_output_in_the_model_folder(task: MoMETrainTask, small_weights) -> None:
    task.options.weights = small_weights
    task._pretrained = task._pretrained_weights({})
    overrides = task._update_overrides({"train#trainer#max_epochs": 3, "bundle_root": str(BUNDLE)})
    model_dir = str(task.options.model_dir)
    assert overrides["ckpt_dir"] == model_dir and overrides["output_dir"].startswith(model_dir)
    assert overrides["model_file"] == "model.pt" and overrides["epochs"] == 3
    assert overrides["preset"] == "small"  # from the weights being fine-tuned
    # None must reach the config as an expression: monai.bundle.run drops None-valued overrides
    assert overrides["iterations_per_epoch"] == "$None" and overrides["curriculum_power"] == "$None"
    assert overrides["loss#expert_weight"] == 0.5 and overrides["progress_bar"] is False


def test_multi_gpu_needs_two_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert multi_gpu_options({"multi_gpu": True, "force_multi_gpu": True}) == {
        "multi_gpu": False,
        "force_multi_gpu": False,
    }
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert multi_gpu_options({"multi_gpu": "true"}) == {"multi_gpu": True, "force_multi_gpu": False}
    assert multi_gpu_options({}) == {"multi_gpu": False, "force_multi_gpu": False}  # the stock default is on


def test_a_failed_multi_gpu_run_fails_the_request(task: MoMETrainTask, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(cmd, env, check):
        calls.append((cmd, env))
        return subprocess.CompletedProcess(cmd, returncode=1)

    monkeypatch.setattr(subprocess, "run", fake_run)
    stock = BUNDLE / "configs" / "monailabel_train.json"  # where the stock task writes the merged config
    stock.write_text("{}")
    try:
        cmd = ["torchrun", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file", f"['{stock}']"]
        with pytest.raises(RuntimeError, match="exit code 1"):
            task.run_multi_gpu({}, cmd, {"CUDA_VISIBLE_DEVICES": "0,1"})
    finally:
        stock.unlink(missing_ok=True)
    cmd, env = calls[0]
    merged = task.options.model_dir / "train" / "monailabel_train.json"
    assert merged.is_file() and str(merged) in " ".join(cmd) and str(stock) not in " ".join(cmd)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=2" in cmd
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert not stock.exists()  # moved out of the bundle
