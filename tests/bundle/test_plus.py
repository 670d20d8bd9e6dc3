"""MoME+ through the bundle: train.json + train_plus.json on phantom cases, and the case datalist's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scripts.data.cases import load_cases
from scripts.data.datalist import main as datalist_main
from scripts.errors import InputError
from scripts.mome_plus import PLUS_MODALITIES, MoMEPlus, ZeroFillUNet

from .test_workflows import workflow


@pytest.fixture
def cases(phantom_root: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    args = ["--out", str(folder / "datalist_cases.json"), "--phantoms", str(phantom_root), "--val", "0.5"]
    datalist_main([*args, "--test", "0", "--seed", "0", "--cases", *PLUS_MODALITIES])
    return folder


@pytest.mark.slow
def test_train_plus_runs_with_sequence_dropout_and_saves_a_mome_plus(cases: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "models"
    wf = workflow(["train.json", "train_plus.json"], dataset_dir=str(cases), ckpt_dir=str(ckpt), val_interval=1)
    wf.initialize()
    assert isinstance(wf.parser.get_parsed_content("network_def"), MoMEPlus)
    wf.run()
    wf.finalize()
    state = torch.load(ckpt / "model_plus.pt", map_location="cpu", weights_only=True)
    assert state["mome"]["network"] == "MoMEPlus" and state["mome"]["modalities"] == list(PLUS_MODALITIES)
    model = MoMEPlus("small")
    model.load_state_dict(state["model"], strict=True)
    trained = torch.load(ckpt / "checkpoint_plus.pt", map_location="cpu", weights_only=False)
    assert trained["trainer"]["iteration"] == 2


@pytest.mark.slow
def test_the_zero_fill_baseline_trains_on_the_same_cases(cases: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "models"
    configs = ["train.json", "train_plus.json", "train_plus_baseline.json"]
    wf = workflow(configs, dataset_dir=str(cases), ckpt_dir=str(ckpt), val_interval=1)
    wf.initialize()
    wf.run()
    wf.finalize()
    state = torch.load(ckpt / "zero_fill_unet.pt", map_location="cpu", weights_only=True)
    assert state["mome"]["network"] == "ZeroFillUNet"
    ZeroFillUNet("small").load_state_dict(state["model"], strict=True)


def test_a_case_datalist_for_other_sequences_is_refused(cases: Path) -> None:
    path = cases / "datalist_cases.json"
    with pytest.raises(InputError, match=r"this model's are \['T1', 'FLAIR'\]"):
        load_cases(path, "training", ["T1", "FLAIR"])
    content = json.loads(path.read_text())
    content["training"][0].pop("label")
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match="case 0 of 'training' needs a label"):
        load_cases(path, "training", PLUS_MODALITIES)
