"""The bad-input corpus (``phantoms.corrupt``: every way an image or label can be unusable) against the image I/O
module, the datalist CLI and the bundle CLIs. Each case states what must happen: a refusal that names the file or
key and says what was expected, in one line, exit status 2, nothing written. (The server's side of the corpus:
``tests/monailabel_app/test_bad_inputs.py``.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from demo.commands import BUNDLE, bundle_command
from phantoms.corrupt import IMAGE_KINDS, LABEL_KINDS, good_case
from scripts.data.datalist import main as datalist_cli
from scripts.io import VolumeError, check_image, check_label

#: The datalist takes a dataset's own label vocabulary (BraTS 1, 2, 4; WMH 1, 2), so a value outside the app's
#: {0, 1} is not an error there; every other label kind is.
DATALIST_ACCEPTS = {"label value outside the label set"}


def _make(builder, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return builder(folder)


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_the_io_module_refuses_every_bad_image(kind: str, tmp_path: Path) -> None:
    path = _make(IMAGE_KINDS[kind], tmp_path)
    with pytest.raises(VolumeError) as err:
        check_image(path)
    assert path.name in str(err.value)


@pytest.mark.parametrize("kind", LABEL_KINDS)
def test_the_io_module_refuses_every_bad_label(kind: str, tmp_path: Path) -> None:
    image, _ = good_case(tmp_path)
    path = _make(LABEL_KINDS[kind], tmp_path / "labels")
    with pytest.raises(VolumeError) as err:
        check_label(path, image, values=[1])
    assert path.name in str(err.value)


def _datalist_refusal(tmp_path: Path, capsys, image: Path, label: Path, modality: str = "T1") -> str:
    table = tmp_path / "list.csv"
    table.write_text(f"image,label,modality\n{image},{label},{modality}\n")
    out = tmp_path / "out" / "datalist.json"
    with pytest.raises(SystemExit) as exit_:
        datalist_cli(["--csv", str(table), "--out", str(out)])
    assert exit_.value.code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("kind", [*IMAGE_KINDS, *(k for k in LABEL_KINDS if k not in DATALIST_ACCEPTS)])
def test_the_datalist_cli_refuses_in_one_line_and_writes_nothing(kind: str, tmp_path: Path, capsys) -> None:
    image, label = good_case(tmp_path)
    if kind in IMAGE_KINDS:
        image = _make(IMAGE_KINDS[kind], tmp_path / "bad")
        named = image.name
    else:
        label = _make(LABEL_KINDS[kind], tmp_path / "bad")
        named = label.name
    assert named in _datalist_refusal(tmp_path, capsys, image, label)


def test_the_datalist_cli_refuses_an_unknown_modality(tmp_path: Path, capsys) -> None:
    image, label = good_case(tmp_path)
    line = _datalist_refusal(tmp_path, capsys, image, label, modality="flare")
    assert "flare" in line and "T1c" in line  # what was given, and what is expected


def _cli(cmd: list[str]) -> tuple[int, list[str]]:
    result = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("error:") or "Trace" in ln]
    return result.returncode, lines


@pytest.mark.slow
def test_the_bundle_clis_print_one_line_and_exit_2(tmp_path: Path) -> None:
    image, label = good_case(tmp_path)
    nan = _make(IMAGE_KINDS["NaN voxels"], tmp_path / "bad")
    weights = tmp_path / "models" / "model.pt"
    weights.parent.mkdir()
    import torch

    from scripts.mome import MoME

    torch.save({"model": MoME("small").state_dict()}, weights)
    code, lines = _cli(
        bundle_command(["inference.json"], input=str(nan), ckpt_dir=str(weights.parent), output_dir=str(tmp_path / "o"))
    )
    assert code == 2 and len(lines) == 1 and nan.name in lines[0] and "NaN" in lines[0], lines
    # the cohort's table says why; no label, no temporary file
    assert [p.name for p in sorted((tmp_path / "o").iterdir())] == [
        "cohort.csv", "cohort_summary.json", nan.name.replace(".nii.gz", "_report.json")
    ]  # fmt: skip
    assert "NaN" in (tmp_path / "o" / "cohort.csv").read_text()

    # a datalist edited by hand: the missing image is found before any caching, with data-loader workers on
    item = {"image": str(image), "label": str(label), "modality": "T1"}
    missing = {**item, "image": str(tmp_path / "gone_t1.nii.gz")}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [item, missing], "validation": [item]}))
    train = {"dataset_dir": str(tmp_path), "ckpt_dir": str(tmp_path / "m"), "output_dir": str(tmp_path / "e")}
    code, lines = _cli(bundle_command(["train.json"], num_workers=2, **train))
    assert code == 2 and len(lines) == 1 and "gone_t1.nii.gz" in lines[0], lines

    code, lines = _cli(bundle_command(["train.json"], epochs=-1, **train))
    assert code == 2 and lines == ["error: --epochs -1: expected a whole number >= 1"], lines

    # a damaged training state: named, one line, before any caching (not from inside Ignite's run)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [item], "validation": [item]}))
    code, lines = _cli(bundle_command(["train.json"], resume=True, **train))
    assert code == 2 and len(lines) == 1 and "checkpoint.pt: not a readable training checkpoint" in lines[0], lines
    assert "weights_only" not in lines[0]  # PyTorch's advice to unpickle anything is not passed on
