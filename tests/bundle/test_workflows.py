"""Every bundle config runs through ConfigWorkflow with tiny overrides on phantoms (model-zoo test style)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events

from demo.commands import BUNDLE, CONFIGS, bundle_command, config_files
from scripts.handlers import curriculum_weight
from scripts.mome import MoME

#: On top of ``configs/cpu.json``: overrides that make every workflow run in seconds.
TINY = {
    "epochs": 1,
    "iterations_per_epoch": 2,
    "batch_size": 2,
    "num_workers": 0,
    "cache_rate": 0.0,
    "progress_bar": False,
}


def workflow(configs: list[str], workflow_type: str = "train", cpu: bool = True, **override):
    """A ``ConfigWorkflow`` over bundle configs + the CPU overlay with the tiny overrides (model-zoo test style)."""
    from monai.bundle import ConfigWorkflow

    files = [str(BUNDLE / f) for f in config_files(configs, cpu)]
    if "ckpt_dir" in override:  # TensorBoard and reports next to the weights, never into the bundle
        override.setdefault("output_dir", str(Path(override["ckpt_dir"]) / "out"))
    return ConfigWorkflow(
        config_file=files,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(BUNDLE),
        **{**TINY, **override},
    )


@pytest.fixture(scope="module")
def tiny_dataset(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder with datalist.json: 4 training images, 1 validation, 3 test (one per dataset kind)."""
    from scripts.data.datalist import main

    folder = tmp_path_factory.mktemp("tiny")
    full = folder / "full.json"
    main(["--out", str(full), "--phantoms", str(phantom_root), "--val", "0.5", "--test", "0", "--seed", "0"])
    content = json.loads(full.read_text())
    pick = {"training": [], "validation": [], "test": []}
    for item in content["training"]:
        if item["dataset"] in ("BraTS2021", "WMH2017", "ISLES2022") and len(pick["training"]) < 4:
            pick["training"].append(item)
    pick["validation"] = [i for i in content["validation"] if i["dataset"] == "WMH2017"][:1]
    pick["test"] = [next(i for i in content["validation"] if i["dataset"] == d) for d in ("BraTS2021", "ISLES2022")]
    pick["test"].append(dict(next(i for i in content["validation"] if i["dataset"] == "ATLAS2"), modality=None))
    (folder / "datalist.json").write_text(json.dumps(pick))
    return folder


@pytest.fixture(scope="module")
def trained(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ckpt_dir of one tiny stage-2 training run (model.pt + checkpoint.pt), shared by the tests that need weights."""
    ckpt = tmp_path_factory.mktemp("models")
    wf = workflow(["train.json"], dataset_dir=str(tiny_dataset), ckpt_dir=str(ckpt), output_dir=str(ckpt / "eval"))
    wf.initialize()
    wf.run()
    wf.finalize()
    shutil.rmtree(ckpt / "eval", ignore_errors=True)
    return ckpt


def _strict_load(path: Path) -> MoME:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == {"model", "mome"}, "model.pt must be {'model': state_dict, 'mome': record}"
    assert state["mome"] == {
        "network": "MoME", "preset": "small", "modalities": ["T1", "T1c", "T2", "FLAIR", "DWI"], "num_classes": 2,
        "gate_activation": None, "spacing": 2.0, "register": False, "normalization": "brain",
        "patch_size": [32, 32, 32],
    }  # fmt: skip
    model = MoME("small")
    model.load_state_dict(state["model"], strict=True)
    return model


def test_train_saves_best_model_and_training_state(trained: Path) -> None:
    _strict_load(trained / "model.pt")
    state = torch.load(trained / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert set(state) >= {"model", "optimizer", "lr_scheduler", "trainer"}
    assert state["trainer"]["iteration"] == state["trainer"]["epoch_length"] == TINY["iterations_per_epoch"]
    assert not any(k.startswith("module.") for k in state["model"])
    assert oct((trained / "model.pt").stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_train_properties(tiny_dataset: Path, tmp_path: Path) -> None:
    wf = workflow(["train.json"], dataset_dir=str(tiny_dataset), ckpt_dir=str(tmp_path))
    wf.initialize()
    assert not wf.check_properties()
    assert wf.train_dataset_data  # the datalist is read through the properties interface too
    wf.finalize()


def test_stage1_expert_hands_over_to_stage2(tiny_dataset: Path, tmp_path: Path) -> None:
    wf = workflow(
        ["train.json", "train_experts.json"], dataset_dir=str(tiny_dataset), ckpt_dir=str(tmp_path), expert="FLAIR"
    )
    wf.initialize()
    assert not wf.check_properties()
    assert {i["modality"] for i in wf.parser.get_parsed_content("train#dataset#data")} == {"FLAIR"}
    wf.run()
    wf.finalize()
    expert = torch.load(tmp_path / "expert_FLAIR.pt", weights_only=True)["model"]
    stage2 = workflow(
        ["train.json"], dataset_dir=str(tiny_dataset), ckpt_dir=str(tmp_path / "s2"), experts_from=str(tmp_path)
    )
    stage2.initialize()
    net = stage2.parser.get_parsed_content("network_def")
    flair = net.experts[net.modalities.index("FLAIR")].state_dict()
    assert all(torch.equal(flair[k], v) for k, v in expert.items())
    t1 = net.experts[0].state_dict()
    assert not all(torch.equal(t1[k], expert[k]) for k in expert)  # no T1 file: T1 expert keeps its own init
    stage2.finalize()


def test_evaluate_writes_grouped_report(trained: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    wf = workflow(
        ["train.json", "evaluate.json"],
        dataset_dir=str(tiny_dataset),
        ckpt_dir=str(trained),
        output_dir=str(tmp_path),
        save_predictions=True,
        tsne=True,
    )
    wf.initialize()
    assert not wf.check_properties()
    wf.run()
    wf.finalize()
    # the gate's bottleneck feature of every image (128 channels in the small preset), from the same forward
    features = np.load(tmp_path / "bottleneck_features.npz")
    assert features["features"].shape == (3, 128) and np.isfinite(features["features"]).all()
    assert len(set(features["image"].tolist())) == 3 and (tmp_path / "tsne.png").stat().st_size > 0
    with (tmp_path / "cases.csv").open() as f:
        rows = list(csv.DictReader(f))
    # the same numbers from the prediction files (native grid) as from the evaluator: one evaluation path
    from scripts.data.datalist import load
    from scripts.evaluation import evaluate_folder, read_cases

    items = load(tiny_dataset / "datalist.json", "test")
    from_files = evaluate_folder(items, tmp_path / "predictions")
    assert [round(c["dice"], 4) for c in from_files] == [float(r["dice"]) for r in rows]
    assert [c["dice"] for c in read_cases(tmp_path / "cases.csv")] == [float(r["dice"]) for r in rows]
    for c, r in zip(from_files, rows, strict=True):  # the lesion-wise scores too
        assert [c[k] for k in ("tp", "fp", "fn")] == [int(r[k]) for k in ("tp", "fp", "fn")]
        assert (round(c["lesion_dice"], 4), round(c["avd_ml"], 4)) == (float(r["lesion_dice"]), float(r["avd_ml"]))
    with (tmp_path / "lesions.csv").open() as f:
        assert len(list(csv.DictReader(f))) == sum(len(c["lesions"]) for c in from_files)
    for image in items:
        saved = tmp_path / "predictions" / Path(image["image"]).name.replace(".nii", "_seg.nii")
        assert nib.load(saved).shape == nib.load(image["image"]).shape
    assert len(rows) == 3
    assert {r["dataset"] for r in rows} == {"BraTS2021", "ISLES2022", "ATLAS2"}
    assert {r["modality"] for r in rows} >= {"unknown"}
    for r in rows:
        shares = [float(r[f"gate_{m}"]) for m in ("T1", "T1c", "T2", "FLAIR", "DWI")]
        assert sum(shares) == pytest.approx(1.0, abs=1e-3)
        assert 0.0 <= float(r["dice"]) <= 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_cases"] == 3
    assert set(summary["dice"]["lesion_type"]) == {"glioma", "stroke_acute", "stroke_chronic"}
    assert summary["average"]["case_level"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]), abs=1e-3)
    assert set(summary["specialisation_index"]) == {"T1", "DWI"}
    assert set(summary["lesion_wise"]["lesion_type"]) == set(summary["dice"]["lesion_type"])
    assert sum(b["n_lesions"] for b in summary["by_size_bin"].values()) == sum(len(c["lesions"]) for c in from_files)
    for png in ("radar.png", "gate_usage.png"):
        assert (tmp_path / png).stat().st_size > 10_000


@pytest.mark.parametrize("options", [{}, {"tta": True, "bf16": True}, {"register": True}])
def test_inference_writes_native_space_labels(trained: Path, phantom_root: Path, tmp_path: Path, options) -> None:
    images = sorted((phantom_root / "isles2022").rglob("*_dwi.nii.gz"))[:1]
    if not options:  # mirroring (x8) and registration are slower: one image is enough to test them
        images += sorted((phantom_root / "wmh2017").rglob("FLAIR.nii.gz"))[:1]
    ckpt = trained
    if options.get("register"):  # weights without a record (an older file): the knobs given are used as they are
        ckpt = tmp_path / "old"
        ckpt.mkdir()
        weights = torch.load(trained / "model.pt", weights_only=True)["model"]
        torch.save({"model": weights}, ckpt / "model.pt")
    wf = workflow(
        ["inference.json"],
        workflow_type="infer",
        input=[str(p) for p in images],
        ckpt_dir=str(ckpt),
        output_dir=str(tmp_path),
        **options,
    )
    wf.initialize()
    assert not wf.check_properties()
    wf.run()
    wf.finalize()
    for image in images:
        name = image.name.replace(".nii.gz", "_seg.nii.gz")
        out, src = nib.load(tmp_path / name), nib.load(image)
        assert out.shape == src.shape  # the ISLES DWI grid (2x2x4 mm) and the WMH grid differ: both restored
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}
        report = json.loads((tmp_path / name.replace("_seg.nii.gz", "_report.json")).read_text())
        assert report["n_lesions"] == len(report["lesions"]) and report["status"] == "ok"
        if options.get("register"):  # registered: the overlap with the template is good, MNI coordinates given
            assert report["registration"]["overlap"] > 0.7, report["registration"]
            assert all(lesion["centroid_mni_mm"] is not None for lesion in report["lesions"])
            assert not any(f["flag"] == "registration" for f in report["qc_flags"])


def test_weights_describe_themselves(trained: Path, phantom_root: Path, tmp_path: Path) -> None:
    """No CPU overlay, no knobs: preset, spacing, registration and normalisation come from model.pt's record; a
    knob that contradicts it is refused with both values."""
    image = sorted((phantom_root / "isles2022").rglob("*_dwi.nii.gz"))[0]
    common = {"input": str(image), "ckpt_dir": str(trained), "output_dir": str(tmp_path)}
    wf = workflow(["inference.json"], workflow_type="infer", cpu=False, **common)
    wf.initialize()
    assert wf.parser.get_parsed_content("network_def").stride == 16  # the small preset, read from the weights
    wf.run()
    wf.finalize()
    assert nib.load(tmp_path / image.name.replace(".nii.gz", "_seg.nii.gz")).shape == nib.load(image).shape
    wf = workflow(["inference.json"], workflow_type="infer", cpu=False, spacing=1.0, **common)
    with pytest.raises(Exception) as err:
        wf.initialize()
    assert "--spacing 1.0 (the weights say 2.0)" in _chain(err.value) and "model.pt" in _chain(err.value)


def test_inference_shares_network_and_preprocessing_with_train(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    train = json.loads((CONFIGS / "train.json").read_text())
    infer = json.loads((CONFIGS / "inference.json").read_text())
    assert train["network_def"] == infer["network_def"]
    # inference takes these knobs from the weights' record; without a record, the training defaults
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "ckpt_path": str(tmp_path / "none.pt")})
    for key in ("modalities", "preset", "gate_activation", "patch_size", "spacing", "register", "normalization"):
        assert train[key] == parser.get_parsed_content(key), key

    def without_label(t: dict) -> dict:
        t = {k: v for k, v in t.items() if k not in ("keys", "mode")}
        return t

    train_steps = [
        s
        for s in train["train"]["preprocessing_transforms"]
        if "Lesion" not in s["_target_"] and "Modality" not in s["_target_"]
    ]
    infer_steps = infer["preprocessing"]["transforms"]
    assert [s["_target_"] for s in train_steps] == [s["_target_"] for s in infer_steps]
    assert [without_label(s) for s in train_steps] == [without_label(s) for s in infer_steps]


def test_bad_inputs_get_clear_errors(tiny_dataset: Path, phantom_root: Path, tmp_path: Path) -> None:
    wf = workflow(["train.json"], dataset_dir=str(tmp_path / "nowhere"), ckpt_dir=str(tmp_path))
    with pytest.raises(Exception) as err:
        wf.initialize()
        wf.run()
    assert "dataset folder not found" in _chain(err.value) and "nowhere" in _chain(err.value)

    with pytest.raises(Exception) as err:
        workflow(["train.json"], dataset_dir=str(tiny_dataset), ckpt_dir=str(tmp_path), register="false").initialize()
    assert "--register 'false'" in _chain(err.value)

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    wf = workflow(["inference.json"], workflow_type="infer", input=[str(broken)], ckpt_dir=str(tmp_path))
    with pytest.raises(Exception) as err:
        wf.initialize()
        wf.run()
    assert "no trained weights" in _chain(err.value) or "broken.nii.gz" in _chain(err.value)

    torch.save({"model": MoME("small").state_dict()}, tmp_path / "model.pt")
    wf = workflow(["inference.json"], workflow_type="infer", input=[str(broken)], ckpt_dir=str(tmp_path))
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    assert "cannot be read as an image" in _chain(err.value) and "broken.nii.gz" in _chain(err.value)

    wf = workflow(["inference.json"], workflow_type="infer", input=[str(tmp_path / "empty")], ckpt_dir=str(tmp_path))
    (tmp_path / "empty").mkdir()
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    assert "no images" in _chain(err.value)


def _chain(error: BaseException) -> str:
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def _cli(configs: list[str], **override) -> list[str]:
    return bundle_command(configs, bundle_root=str(BUNDLE), **{**TINY, **override})


@pytest.mark.slow
def test_resume_continues_epoch_and_curriculum(tiny_dataset: Path, tmp_path: Path) -> None:
    common = {
        "dataset_dir": str(tiny_dataset),
        "ckpt_dir": str(tmp_path),
        "epochs": 4,
        "val_interval": 10,
        "output_dir": str(tmp_path / "eval"),
    }
    proc = subprocess.Popen(
        _cli(["train.json"], **common), cwd=BUNDLE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = tmp_path / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 300
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), "no training checkpoint after the first epoch"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = torch.load(state, map_location="cpu", weights_only=False)
    done = saved["trainer"]["iteration"] // saved["trainer"]["epoch_length"]
    assert 1 <= done < 4

    wf = workflow(["train.json"], resume=True, **common)
    wf.initialize()
    trainer, loss = wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("loss")
    seen = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append((e.state.epoch, loss.expert_weight)))
    network = wf.parser.get_parsed_content("network")
    resumed_params = {}
    trainer.add_event_handler(  # the first epoch after the resume starts from the saved weights
        Events.EPOCH_STARTED,
        lambda e: resumed_params or resumed_params.update({k: v.clone() for k, v in network.state_dict().items()}),
    )
    wf.run()
    wf.finalize()
    # every network (all experts and the gate) came back from the checkpoint
    assert all(torch.equal(resumed_params[k], v) for k, v in saved["model"].items())
    assert seen[0][0] == done + 1
    assert seen == [(e, pytest.approx(curriculum_weight(e - 1, 4))) for e in range(done + 1, 5)]


@pytest.mark.slow
def test_torchrun_two_process_gloo_training(tiny_dataset: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    from scripts.data.datalist import load

    # absolute paths, and every rank needs at least one validation image
    content = {s: load(tiny_dataset / "datalist.json", s) for s in ("training", "test")}
    content["validation"] = content["test"][:2]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "datalist.json").write_text(json.dumps(content))
    args = _cli(
        ["train.json", "multi_gpu_train.json"],
        dataset_dir=str(tmp_path / "data"),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path / "eval"),
    )
    cmd = [str(torchrun), "--standalone", "--nnodes=1", "--nproc_per_node=2", *args[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
    assert result.returncode == 0, "\n".join(errors[-20:])
    model = _strict_load(tmp_path / "model.pt")
    assert model is not None
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert not any(k.startswith("module.") for k in state["model"])
