"""``--conf`` parsing: defaults, types the bundle accepts (real bools), and refusals at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from monailabel_app.lib.options import AppOptions, parse_bool, parse_size

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "monailabel_app"


def test_defaults_serve_the_sibling_bundle_into_the_app_model_folder() -> None:
    options = AppOptions.from_conf(APP, {"models": "mome"})
    assert options.bundle == ROOT / "bundle"
    assert options.model_dir == APP / "model" / "mome"
    assert options.served_file == APP / "model" / "mome" / "model.pt"
    assert options.weights == ROOT / "bundle" / "models" / "model.pt"  # read-only fallback
    assert options.preset is None and options.epochs == 5 and options.infer_overrides == {}


def test_knobs_are_parsed_into_the_types_the_bundle_checks(tmp_path: Path) -> None:
    conf = {
        "model_dir": str(tmp_path),
        "register": "false",
        "spacing": "2",
        "patch_size": "64",
        "sw_roi_size": "[80,96,80]",
        "tta": "true",
        "learning_rate": "0.01",
        "preset": "small",
        "weights": "none",
    }
    options = AppOptions.from_conf(APP, conf)
    assert options.infer_overrides == {
        "register": False,
        "spacing": 2.0,
        "patch_size": [64, 64, 64],
        "sw_roi_size": [80, 96, 80],
        "tta": True,
    }
    assert options.train_overrides["register"] is False and options.train_overrides["learning_rate"] == 0.01
    assert "tta" not in options.train_overrides and "learning_rate" not in options.infer_overrides
    assert options.preset == "small" and options.weights is None


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"models": "spleen_ct_segmentation"}, "expected mome, mome_plus"),
        ({"registr": "false"}, "unknown --conf key"),
        ({"register": "maybe"}, "--conf register"),
        ({"preset": "huge"}, "--conf preset"),
        ({"epochs": "0"}, "epochs must be"),
        ({"bundle": "/nonexistent"}, "not a MoME bundle"),
        ({"model_dir": str(ROOT / "bundle" / "models")}, "inside the bundle"),
        ({"weights": "/nonexistent/model.pt"}, "no such file"),
    ],
)
def test_bad_conf_stops_the_app_with_a_message(conf: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppOptions.from_conf(APP, conf)


def test_parsers() -> None:
    assert parse_bool(False) is False and parse_bool("Yes") is True
    assert parse_size("96,128,96") == [96, 128, 96] and parse_size([32]) == [32, 32, 32]
    with pytest.raises(ValueError):
        parse_size("1,2")
