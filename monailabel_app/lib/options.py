"""Every ``--conf key value`` the MoME app understands, parsed and checked once when the app starts.

MONAI Label hands the app its ``--conf`` pairs as strings (and, to training subprocesses, through the environment);
a typo or a wrong type should stop the server at start with a message, not fail the first request.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monailabel.utils.others.generic import strtobool

from monailabel_app.lib.bundle import bundle_module

__all__ = [
    "ALIASES", "IGNORED", "LABELS", "MODELS", "MODEL_NAME", "PLUS_MODEL_NAME", "SWITCHES", "AppOptions", "parse_bool",
    "parse_size",
]  # fmt: skip

MODEL_NAME = "mome"
#: MoME+: a case's co-registered sequences (the requested image and its siblings in the datastore), any missing
PLUS_MODEL_NAME = "mome_plus"
MODELS = (MODEL_NAME, PLUS_MODEL_NAME)
LABELS = {"lesion": 1}


def parse_bool(value: Any) -> bool:
    """A real ``bool`` (the bundle's ``initialize`` rejects the string ``"false"``), as MONAI Label spells them."""
    try:
        return bool(strtobool(value.strip() if isinstance(value, str) else value))
    except (ValueError, AttributeError) as e:
        raise ValueError(f"expected true or false, got {value!r}") from e


def parse_size(value: Any) -> list[int]:
    """``[96, 128, 96]`` from ``"[96,128,96]"``, ``"96,128,96"`` or ``"64"`` (cubic)."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [int(v) for v in text.split(",") if v.strip()]
    sizes = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"expected three positive sizes, got {value!r}")
    return sizes


def parse_window(value: Any) -> list[int] | str:
    """A sliding-window size as :func:`parse_size`, or ``none`` / ``whole``: one window over the whole image."""
    if value is None or str(value).strip().lower() in ("none", "whole", "null"):
        return "$None"  # a config expression: monai.bundle drops overrides whose value is None
    return parse_size(value)


#: Bundle knobs that both inference and fine-tuning take (the preprocessing must be the same in both).
SHARED_KNOBS: dict[str, Callable[[Any], Any]] = {
    "spacing": float,
    "register": parse_bool,
    "patch_size": parse_size,
    "sw_roi_size": parse_window,
}
INFER_KNOBS: dict[str, Callable[[Any], Any]] = {"tta": parse_bool, "bf16": parse_bool, "overlap": float}
TRAIN_KNOBS: dict[str, Callable[[Any], Any]] = {"batch_size": int, "learning_rate": float}

#: Switches the stock ``radiology`` / ``monaibundle`` apps take, honoured here the same way.
SWITCHES = ("preload", "skip_trainers", "skip_strategies", "skip_scoring")
#: Stock keys that name a Model Zoo download or a feature this app does not have: accepted, ignored, and logged.
IGNORED = {
    "zoo_source": "nothing is downloaded: the bundle is a local folder",
    "zoo_repo": "nothing is downloaded: the bundle is a local folder",
    "zoo_info": "nothing is downloaded: the bundle is a local folder",
    "epistemic_enabled": "MoME's uncertainty is expert disagreement, always available (strategy 'uncertainty')",
    "epistemic_samples": "expert disagreement needs one forward pass, not MC-dropout samples",
    "epistemic_simulation_size": "expert disagreement needs one forward pass, not MC-dropout samples",
    "tta_samples": "mirroring TTA has a fixed 8 passes (--conf tta true)",
}
#: Stock keys with a MoME meaning: the stock name -> the app's own option.
ALIASES = {"epistemic_max_samples": "scoring_max_images", "tta_enabled": "tta"}
#: Keys MONAI Label itself puts into the conf; left to it.
_FOREIGN = {"server_mode", "labels", "auth_config"}


@dataclass
class AppOptions:
    """What the app serves and how (see the README's option table)."""

    app_dir: Path
    bundle: Path
    model_dir: Path
    weights: Path | None
    preset: str | None = None
    epochs: int = 5
    val_split: float = 0.2
    expert_weight: float = 0.5
    scoring_max_images: int = 8
    infer_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    switches: dict[str, bool] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = (MODEL_NAME,)
    #: ``--conf weights_plus``, by default the bundle's ``models/model_plus.pt``
    weights_plus: Path | None = None
    model: str = MODEL_NAME

    def for_model(self, name: str) -> AppOptions:
        """These options for one model: MoME+ has its own model folder and weights (``<app>/model/mome_plus``)."""
        if name == self.model:
            return self
        return dataclasses.replace(
            self, model=name, model_dir=self.model_dir.parent / name, weights=self.weights_plus, weights_plus=None
        )

    @property
    def served_file(self) -> Path:
        """Where fine-tuning writes, and the first place weights are looked for."""
        return self.model_dir / "model.pt"

    @property
    def weight_candidates(self) -> list[Path | None]:
        return [self.served_file, self.weights]

    @classmethod
    def from_conf(cls, app_dir: str | Path, conf: Mapping[str, Any]) -> AppOptions:
        app_dir = Path(app_dir).resolve()
        conf = dict(conf or {})
        for stock, ours in ALIASES.items():
            if stock in conf:
                conf.setdefault(ours, conf.pop(stock))
        models = [m.strip() for m in str(conf.pop("models", MODEL_NAME)).split(",") if m.strip()]
        if not models or any(m not in (*MODELS, "all") for m in models):
            raise ValueError(
                f"--conf models {','.join(models)!r}: expected {', '.join(MODELS)} (comma-separated) or all"
            )
        models = list(MODELS) if "all" in models else [m for m in MODELS if m in models]

        bundle = Path(conf.pop("bundle", None) or app_dir.parent / "bundle").expanduser().resolve()
        missing = [
            f for f in ("inference.json", "train.json", "metadata.json") if not (bundle / "configs" / f).is_file()
        ]
        if missing:
            raise ValueError(
                f"--conf bundle {bundle}: not a MoME bundle (missing configs/{', configs/'.join(missing)})"
            )

        model_dir = Path(conf.pop("model_dir", None) or app_dir / "model" / MODEL_NAME).expanduser().resolve()
        if model_dir == bundle or bundle in model_dir.parents:
            raise ValueError(f"--conf model_dir {model_dir} is inside the bundle; the app never writes into {bundle}")

        weights = _weights(conf, "weights", bundle / "models" / "model.pt")
        weights_plus = _weights(conf, "weights_plus", bundle / "models" / "model_plus.pt")

        preset = str(conf.pop("preset", "auto")).strip()
        presets = bundle_module(bundle, "scripts.mome").PRESETS
        if preset.lower() != "auto" and preset not in presets:
            raise ValueError(f"--conf preset {preset!r}: expected auto or one of {', '.join(presets)}")
        options = cls(
            app_dir=app_dir,
            bundle=bundle,
            model_dir=model_dir,
            weights=weights,
            preset=None if preset.lower() == "auto" else preset,
            models=tuple(models),
            weights_plus=weights_plus,
        )
        for name, parse in (
            ("epochs", int),
            ("val_split", float),
            ("expert_weight", float),
            ("scoring_max_images", int),
        ):
            if name in conf:
                setattr(options, name, _parsed(name, conf.pop(name), parse))
        if options.epochs < 1:
            raise ValueError(f"--conf epochs must be >= 1, got {options.epochs}")
        if not 0.0 <= options.val_split < 1.0:
            raise ValueError(f"--conf val_split must be in [0, 1), got {options.val_split}")
        if not 0.0 <= options.expert_weight <= 1.0:
            raise ValueError(f"--conf expert_weight must be in [0, 1], got {options.expert_weight}")
        if options.scoring_max_images < 1:
            raise ValueError(f"--conf scoring_max_images must be >= 1, got {options.scoring_max_images}")

        for name, parse in SHARED_KNOBS.items():
            if name in conf:
                value = _parsed(name, conf.pop(name), parse)
                options.infer_overrides[name] = options.train_overrides[name] = value
        for knobs, target in ((INFER_KNOBS, options.infer_overrides), (TRAIN_KNOBS, options.train_overrides)):
            for name, parse in knobs.items():
                if name in conf:
                    target[name] = _parsed(name, conf.pop(name), parse)

        for name in SWITCHES:
            options.switches[name] = _parsed(name, conf.pop(name, "false"), parse_bool)
        options.ignored = {k: IGNORED[k] for k in list(conf) if k in IGNORED and conf.pop(k) is not None}
        unknown = sorted(k for k in conf if k not in _FOREIGN)
        if unknown:
            raise ValueError(f"unknown --conf key(s) {', '.join(unknown)}; see monailabel_app/README.md")
        return options


def _weights(conf: dict[str, Any], key: str, default: Path) -> Path | None:
    """``--conf weights`` / ``weights_plus``: a file that exists, ``none`` (train first), or the bundle's."""
    value = conf.pop(key, None)
    if value is None:
        return default
    if str(value).strip().lower() in ("", "none"):
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"--conf {key} {path}: no such file")
    return path


def _parsed(name: str, value: Any, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--conf {name} {value!r}: {e}") from e
