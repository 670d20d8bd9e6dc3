"""Build one MONAI (decathlon-style) datalist from the datasets a lab already has.

One item per (subject, modality) image; splits by subject within each dataset, deterministic for a seed. Every
image and label is read once to check it; the datalist is written atomically, or not at all (``--help``)."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts.atomic import save_json
from scripts.data.converters import CONVERTERS, Item
from scripts.data.modality import canonical_modality
from scripts.errors import InputError
from scripts.io import check_image, check_label, check_pair

SPLITS = ("training", "validation", "test")
#: Where ``python -m phantoms`` puts each imitated dataset inside its output folder.
PHANTOM_FOLDERS = dict(
    brats=("brats2021", "brats_mets"), atlas=("atlas2",), isles=("isles2022",), msseg=("msseg2016",), wmh=("wmh2017",)
)


def split(items: list[Item], val: float, test: float, seed: int, holdout: tuple[str, ...] = ()) -> dict:
    """Assign whole subjects to splits, per dataset, in the given ratios; ``holdout`` datasets go to test only."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"split ratios must be >= 0 and sum to < 1, got val={val} test={test}")
    subjects: dict[str, set[str]] = defaultdict(set)
    for item in items:
        subjects[item["dataset"]].add(item["subject"])
    if unknown := set(holdout) - set(subjects):
        raise ValueError(f"--holdout {sorted(unknown)}: no such dataset; found {sorted(subjects)}")
    where: dict[tuple[str, str], str] = {}
    for dataset, ids in subjects.items():
        ids = sorted(ids)
        random.Random(f"{seed}:{dataset}").shuffle(ids)
        if dataset in holdout:
            n_test, n_val = len(ids), 0
        else:
            n_test = min(round(test * len(ids)), len(ids) - 1)  # keep at least one training subject
            n_val = min(round(val * len(ids)), len(ids) - n_test - 1)
        for i, sid in enumerate(ids):
            where[(dataset, sid)] = "test" if i < n_test else "validation" if i < n_test + n_val else "training"
    return {name: [i for i in items if where[(i["dataset"], i["subject"])] == name] for name in SPLITS}


def build(sources: dict[str, list[str]], wmh_other: str = "background", workers: int = 4) -> list[Item]:
    """Run the converters on ``{flag: [folders]}`` and read every image and label to check it; raises on a problem."""
    items: list[Item] = []
    for flag, folders in sources.items():
        for folder in folders:
            items += CONVERTERS[flag](folder, **({"other": wmh_other} if flag == "wmh" else {}))
    if twice := [p for p, n in Counter(i["image"] for i in items).items() if n > 1]:
        raise ValueError(f"image listed by more than one source: {twice[:3]}")
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: check_label(i["label"], check_image(i["image"])), items))
    return items


def read_json(path: Path, make: str) -> dict:
    """A datalist file's content; a missing or broken file is an :class:`InputError` saying how to ``make`` one."""
    if not path.is_file():
        raise InputError(f"datalist not found: {path} (make one with `{make}`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e


def load(
    path: str | os.PathLike,
    split: str = "training",
    labels: bool = True,
    modality: str | None = None,
    check: bool = True,
    workers: int = 4,
) -> list[Item]:
    """One split of a datalist, paths made absolute (what the configs call); ``modality`` keeps only its images.
    ``check`` checks every item's headers and modality name before anything is loaded or cached: a datalist edited
    by hand fails here naming the file, not in a data-loader worker."""
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(
            f"dataset folder not found: {path.parent} (set --dataset_dir to the folder holding datalist.json)"
        )
    content = read_json(path, "python -m scripts.data.datalist")
    if split not in content:
        raise InputError(f"{path}: no '{split}' list; found keys {sorted(content)}")
    for n, item in enumerate(content[split]):
        for key in ("image", "label") if labels else ("image",):
            if key not in item:
                raise InputError(f"{path}: item {n} of '{split}' has no '{key}': {item}")
    if not content[split]:
        if split == "validation":
            return []  # training without validation: the trainer skips it (no best-model file is written then)
        raise InputError(
            f"{path}: the '{split}' list is empty (remake the datalist with more subjects or another --val/--test)"
        )
    items = load_decathlon_datalist(path, is_segmentation=labels, data_list_key=split, base_dir=path.parent)
    if check:
        for item in items:
            canonical_modality(item.get("modality"), where=f"{path} ({item['image']})")
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(lambda i: check_pair(i["image"], i.get("label") if labels else None), items))
    if modality is not None:
        wanted = canonical_modality(modality, where="the modality filter")
        items = [i for i in items if canonical_modality(i.get("modality"), where=str(path)) == wanted]
        if not items and split == "training":
            raise InputError(f"{path}: no '{split}' images of modality {wanted}")
    return items


def _relative(items: list[Item], base: Path, keys: tuple[str, ...] = ("image", "label")) -> list[Item]:
    def rel(path: str) -> str:
        return os.path.relpath(Path(path).resolve(), base.resolve())

    return [{**i, **{k: rel(i[k]) for k in keys if k in i}} for i in items]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.data.datalist", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--out", required=True, type=Path, help="datalist JSON to write")
    for flag, help_ in (
        ("brats", "BraTS 2021 or BraTS 2023 (GLI/MET/...) training folder"),
        ("atlas", "ATLAS v2.0 BIDS folder (ATLAS_2 or its Training folder)"),
        ("isles", "ISLES 2022 BIDS folder"),
        ("msseg", "MSSEG 2016 training folder"),
        ("wmh", "MICCAI WMH 2017 training folder"),
        ("folder", "nnU-Net raw dataset folder (dataset.json, imagesTr, labelsTr)"),
        ("csv", "CSV with image,label[,modality,subject,dataset,lesion_type]"),
    ):
        parser.add_argument(f"--{flag}", action="append", default=[], metavar="PATH", help=help_)
    parser.add_argument("--phantoms", type=Path, help="output folder of `python -m phantoms`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val", type=float, default=0.2, help="validation share of subjects per dataset")
    parser.add_argument("--test", type=float, default=0.2, help="test share of subjects per dataset")
    parser.add_argument("--holdout", nargs="+", default=[], metavar="DATASET", help="datasets kept for test only")
    parser.add_argument("--wmh-other", choices=("background", "lesion"), default="background")
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="SEQUENCE",
        help="MoME+: one item per subject holding these sequences (e.g. T1 T1c T2 FLAIR) and its availability",
    )
    args = parser.parse_args(argv)
    sources = {flag: getattr(args, flag) for flag in CONVERTERS if getattr(args, flag)}
    if args.phantoms:
        if not args.phantoms.is_dir():
            parser.error(f"--phantoms: not a folder: {args.phantoms}")
        for flag, names in PHANTOM_FOLDERS.items():
            sources[flag] = sources.get(flag, []) + [str(p) for n in names if (p := args.phantoms / n).is_dir()]
    if not any(sources.values()):
        parser.error(f"give at least one dataset ({', '.join(f'--{f}' for f in [*CONVERTERS, 'phantoms'])})")
    try:
        datalist = split(build(sources, args.wmh_other), args.val, args.test, args.seed, tuple(args.holdout))
        if args.cases:
            return _write_cases(datalist, args.cases, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    datalist = {name: _relative(datalist[name], args.out.parent) for name in SPLITS}
    save_json({"description": "MoME datalist (python -m scripts.data.datalist)", **datalist}, args.out)
    counts = Counter((i["dataset"], i["modality"] or "unknown", s) for s in SPLITS for i in datalist[s])
    for (dataset, modality, name), n in sorted(counts.items()):
        print(f"{dataset:16s} {modality:8s} {name:10s} {n:5d}")
    print(f"wrote {args.out}: " + ", ".join(f"{len(datalist[s])} {s}" for s in SPLITS))
    return datalist


def _write_cases(datalist: dict, names: list[str], out: Path) -> dict:
    """The MoME+ datalist: the same subject splits, one case per subject (:mod:`scripts.data.cases`)."""
    from scripts.data.cases import group_cases

    sequences = tuple(canonical_modality(n, where="--cases") for n in names)
    if None in sequences or len(set(sequences)) != len(sequences):
        raise InputError(f"--cases {' '.join(names)}: expected distinct sequence names")
    cases: dict = {"sequences": list(sequences)}
    for name in SPLITS:
        grouped, skipped = group_cases(datalist[name], sequences)
        cases[name] = _relative(grouped, out.parent, (*sequences, "label"))
        for reason in skipped:
            print(f"skipped ({name}): {reason}")
    save_json({"description": "MoME+ case datalist (python -m scripts.data.datalist --cases)", **cases}, out)
    for name in SPLITS:
        counts = Counter("".join("1" if a else "0" for a in c["available"]) for c in cases[name])
        masks = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
        print(f"{name:10s} {len(cases[name]):5d} cases; availability {masks}")
    print(f"wrote {out}: sequences {', '.join(sequences)}")
    return cases


if __name__ == "__main__":
    main()
