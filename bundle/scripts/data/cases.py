"""MoME+ cases: a subject's co-registered sequences as one multi-channel item with an availability mask.

:func:`group_cases` turns the datalist's one-item-per-image entries into one item per (dataset, subject): a key per
sequence the model knows (``"T1": path, "FLAIR": path``), the subject's one label and ``available``. MONAI's
``LoadImaged(keys=sequences, allow_missing_keys=True)`` then loads what is there, :class:`StackSequencesd` puts it
on one grid (the label's in training, the first given sequence's in inference) as K channels (zeros where a sequence
is missing) and :class:`DropSequencesd` hides a random non-empty subset of the present sequences during training.
"""

from __future__ import annotations

import csv
import itertools
import zlib
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, ResampleToMatch

from scripts.data.datalist import read_json
from scripts.data.modality import canonical_modality, modality_in_name
from scripts.errors import InputError
from scripts.io import AFFINE_TOLERANCE, SUFFIXES, check_image, check_label, has_image_suffix

__all__ = [
    "DropSequencesd", "FixedSubsetd", "KeepSequencesd", "StackSequencesd", "case_name_formatter",
    "group_cases", "list_cases", "load_cases",
]  # fmt: skip

_COPIED = ("dataset", "subject", "lesion_type", "label_values")


def group_cases(items: Sequence[Mapping[str, Any]], sequences: Sequence[str]) -> tuple[list[dict], list[str]]:
    """One item per (dataset, subject) from one-per-image items; returns the cases and, for every subject left
    out, why (none of its images is one of ``sequences``, e.g. DWI-only ISLES for a four-sequence model).

    A subject with two images of one sequence, or whose images name different labels, is an error naming both
    files: which one to use is the user's decision, not ours."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for item in items:
        groups[(str(item.get("dataset")), str(item.get("subject")))].append(item)
    cases, skipped = [], []
    for (dataset, subject), members in groups.items():
        named = [(canonical_modality(i.get("modality"), where=str(i["image"])), i) for i in members]
        used = [(s, i) for s, i in named if s in sequences]
        if not used:
            names = sorted(str(s) for s, _ in named)
            skipped.append(f"{dataset} subject {subject}: only {', '.join(names)}, none of {', '.join(sequences)}")
            continue
        images: dict[str, str] = {}
        for sequence, item in used:
            if sequence in images:
                raise InputError(
                    f"{dataset} subject {subject}: two {sequence} images, {images[sequence]} and {item['image']}; "
                    "keep one (a case has one image per sequence)"
                )
            images[sequence] = item["image"]
        labels = {i["label"] for _, i in used}
        if len(labels) > 1:
            raise InputError(f"{dataset} subject {subject}: its images name different labels: {sorted(labels)}")
        first = used[0][1]
        case = {
            **{s: images[s] for s in sequences if s in images},
            "label": labels.pop(),
            "available": [int(s in images) for s in sequences],
            **{k: first[k] for k in _COPIED if k in first},
        }
        cases.append(case)
    return cases, skipped


def load_cases(path: str | Path, split: str, sequences: Sequence[str], keep: Sequence[str] | None = None) -> list[dict]:
    """One split of a case datalist (``datalist --cases``), paths made absolute, every file's header checked: its
    sequences must be the model's, in its order (a datalist made for another model is refused, not reordered).

    Each item gets ``reference`` (the sequence on the label's grid), ``image`` (that file: the case's name in the
    evaluation's tables) and ``modality`` (the sequences it is segmented from, ``T1+FLAIR``). With ``keep`` (an
    evaluation of one availability combination) only cases that have every one of those sequences are listed, to
    be segmented from those alone (:class:`KeepSequencesd`)."""
    keep = None if keep is None else list(dict.fromkeys(canonical_modality(s, where="--eval_sequences") for s in keep))
    if keep is not None and (not keep or any(s not in sequences for s in keep)):
        raise InputError(f"--eval_sequences {keep}: expected a non-empty subset of {', '.join(sequences)}")
    path = Path(path)
    content = read_json(path, "python -m scripts.data.datalist --cases " + " ".join(sequences))
    if content.get("sequences") != list(sequences):
        raise InputError(
            f"{path}: cases of sequences {content.get('sequences')}; this model's are {list(sequences)} "
            "(remake it with --cases " + " ".join(sequences) + ")"
        )
    if not content.get(split):
        if split == "validation":
            return []
        raise InputError(f"{path}: no cases in '{split}'")
    items = []
    for n, case in enumerate(content[split]):
        missing = [k for k in ("label", "available") if k not in case]
        if missing or not any(s in case for s in sequences):
            raise InputError(f"{path}: case {n} of '{split}' needs a label, 'available' and a sequence: {case}")
        item = {**case, **{k: str(path.parent / case[k]) for k in (*sequences, "label") if k in case}}
        infos = {s: check_image(item[s]) for s in sequences if s in item}
        label = check_label(item["label"])
        # the case's grid is the label's: the first sequence on it (the others are resampled onto it)
        on_grid = [s for s, info in infos.items() if _same_grid(label, info)]
        if not on_grid:
            raise InputError(
                f"{path}: case {n} of '{split}': its label {label.name} {label.shape} is on the grid of none of its "
                f"sequences ({', '.join(f'{s} {i.name} {i.shape}' for s, i in infos.items())}); resample it onto one"
            )
        if keep is not None and not all(s in infos for s in keep):
            continue
        used = [s for s in sequences if s in infos and (keep is None or s in keep)]
        items.append(item | {"reference": on_grid[0], "image": item[on_grid[0]], "modality": "+".join(used)})
    return items


def _same_grid(a, b) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=AFFINE_TOLERANCE)


def list_cases(inputs: str | Path | Sequence[str | Path], sequences: Sequence[str]) -> list[dict]:
    """Inference cases, one dict each: ``{"case": name, "image": reference file, <sequence>: file, ...,
    "sequences": [given, in order], "reference": sequence}``; the reference (the first given sequence) is the grid
    the label is written on. Inputs: a case folder (its image files, each file's sequence from its name), a folder
    of case folders, or a CSV with a ``case`` column and one column per sequence (``T1,T1c,T2,FLAIR``, synonyms
    allowed; an empty cell is a missing sequence; paths relative to the CSV).

    Files are not read here. A case that cannot run (two files of one sequence, none of the model's sequences) is
    kept with an ``error`` the cohort writes as its row, so the other cases still run."""
    cases: list[dict] = []
    for entry in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        path = Path(entry)
        if path.is_file() and path.suffix.lower() == ".csv":
            cases += _cases_from_csv(path, sequences)
        elif path.is_dir():
            if _images(path):
                cases.append(_case_from_folder(path, sequences))
            else:
                folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
                folders = [f for f in folders if _images(f)]
                if not folders:
                    raise InputError(
                        f"{path}: no images ({', '.join(SUFFIXES)}) in it or in its sub-folders; give a case folder, "
                        "a folder of case folders or a CSV with one column per sequence"
                    )
                cases += [_case_from_folder(f, sequences) for f in folders]
        elif path.is_file():
            raise InputError(
                f"{path} is one image: MoME+ reads cases (a case folder, a folder of them, or a CSV with one column "
                "per sequence); one image alone is a case folder holding it, or inference.json's single-image model"
            )
        else:
            raise InputError(f"input case folder or CSV not found: {path}")
    seen: dict[str, str] = {}
    for case in cases:
        where = case.get("image", case["case"])
        if Path(case["case"]).name != case["case"] or case["case"] in ("", ".", ".."):
            raise InputError(f"case name {case['case']!r} ({where}): a case name is a plain file name, no folders")
        if case["case"] in seen:
            raise InputError(
                f"two cases are named {case['case']!r} ({seen[case['case']]} and {where}): their outputs would "
                "overwrite each other; give each case its own name"
            )
        seen[case["case"]] = where
    return cases


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and has_image_suffix(p))


def _case_from_folder(folder: Path, sequences: Sequence[str]) -> dict:
    case: dict[str, Any] = {"case": folder.name}
    files: dict[str, Path] = {}
    ignored: list[str] = []
    try:
        for image in _images(folder):
            sequence = modality_in_name(image.name)
            if sequence not in sequences:
                why = "no sequence in its name" if sequence is None else f"{sequence}, not one of this model's"
                ignored.append(f"{image.name} ({why})")
            elif sequence in files:
                raise InputError(
                    f"case folder {folder}: two {sequence} images, {files[sequence].name} and {image.name}; keep one "
                    "(a case has one image per sequence)"
                )
            else:
                files[sequence] = image
    except InputError as e:
        return case | {"error": str(e)}
    return _finish(case, [(s, files[s]) for s in sequences if s in files], sequences, f"case folder {folder}", ignored)


def _finish(case: dict, given: list[tuple[str, Path]], sequences: Sequence[str], where: str, ignored=()) -> dict:
    if ignored:
        case["ignored"] = list(ignored)
    if not given:
        found = f" (found {', '.join(ignored)})" if ignored else ""
        return case | {"error": f"{where}: none of the sequences {', '.join(sequences)}{found}: nothing to segment"}
    case |= {s: str(p) for s, p in given}
    return case | {"image": str(given[0][1]), "sequences": [s for s, _ in given], "reference": given[0][0]}


_CSV_OTHER = ("case", "subject", "label")


def _cases_from_csv(path: Path, sequences: Sequence[str]) -> list[dict]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or [] if c]
        columns: dict[str, str] = {}  # column -> sequence
        for column in header:
            if column.lower() in _CSV_OTHER:
                continue
            try:
                sequence = canonical_modality(column, where=f"the header of {path}")
            except InputError as e:
                raise InputError(f"{e}; the other columns a case CSV may have: {', '.join(_CSV_OTHER)}") from None
            if sequence in columns.values():
                raise InputError(f"{path}: two columns for {sequence} ({column} and another); keep one")
            columns[column] = sequence
        used = [c for c, s in columns.items() if s in sequences]
        if not used:
            raise InputError(
                f"{path}: no column for any of {', '.join(sequences)} (header {header or 'empty'}); one column per "
                "sequence, a row per case"
            )
        cases = []
        for n, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
            lower = {k.lower(): v for k, v in row.items()}
            name = lower.get("case") or lower.get("subject") or f"case{n - 1:03d}"
            given = []
            for column in used:  # the CSV's column order: the first given sequence is the reference
                if row.get(column):
                    p = Path(row[column])
                    given.append((columns[column], p if p.is_absolute() else path.parent / p))
            cases.append(_finish({"case": name}, given, sequences, f"{path} line {n} (case {name})"))
    if not cases:
        raise InputError(f"{path}: no rows")
    return cases


def _world_box(image: torch.Tensor) -> np.ndarray:
    """(2, 3) min / max world coordinates of a MetaTensor's voxel-centre corners."""
    shape = np.asarray(image.shape[1:4]) - 1
    corners = np.array(list(itertools.product(*[(0, s) for s in shape])), float)
    affine = np.asarray(image.affine, float)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return np.stack([world.min(0), world.max(0)])


class StackSequencesd(MapTransform):
    """The loaded sequences of a case (MetaTensors, channel first, keys as in ``sequences``; absent keys are missing
    sequences) as one K-channel ``output_key`` on the grid of the reference, with ``available`` (K,).

    The reference is the sequence named by the item's ``reference`` (inference: the first given), else the first
    present one; the output carries its meta data and transform trace, so ``Invertd`` returns a prediction to the
    reference's own grid. A sequence on another grid is resampled onto it; one whose field of view does not overlap
    it is refused with a message naming both files, as is a case with no sequence at all. The item's ``case`` (its
    name) goes into the output's meta data, where :func:`case_name_formatter` names the saved label by it."""

    def __init__(
        self,
        sequences: Sequence[str],
        output_key: str = "image",
        available_key: str = "available",
        reference_key: str = "reference",
        case_key: str = "case",
    ) -> None:
        super().__init__(list(sequences), allow_missing_keys=True)
        self.sequences, self.output_key, self.available_key = tuple(sequences), output_key, available_key
        self.reference_key, self.case_key = reference_key, case_key
        self.resample = ResampleToMatch(mode="bilinear")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        present = [s for s in self.sequences if s in d]
        if not present:
            raise InputError(f"a case with none of the sequences {', '.join(self.sequences)}: nothing to segment")
        reference = d.get(self.reference_key) if d.get(self.reference_key) in present else present[0]
        ref = d[reference]
        ref_box = _world_box(ref)
        channels = []
        for s in self.sequences:
            if s not in d:
                channels.append(torch.zeros(ref.shape[1:], dtype=ref.dtype)[None])
                continue
            img = d.pop(s)
            if img.shape[0] != 1:
                raise InputError(f"{_name(img)}: {img.shape[0]} channels; a sequence must be one 3D volume")
            same_grid = img.shape[1:] == ref.shape[1:] and np.allclose(img.affine, ref.affine, atol=AFFINE_TOLERANCE)
            if not same_grid:
                box = _world_box(img)
                if (np.minimum(box[1], ref_box[1]) <= np.maximum(box[0], ref_box[0])).any():
                    raise InputError(
                        f"{_name(img)} does not overlap {_name(ref)} in space: a case's sequences must be "
                        "co-registered images of one subject"
                    )
                img = self.resample(img, img_dst=ref)
            channels.append(img[:1].as_tensor().to(ref.dtype) if isinstance(img, MetaTensor) else img[:1].to(ref.dtype))
        meta = dict(ref.meta)
        if self.case_key in d:
            meta[self.case_key] = str(d[self.case_key])
        stacked = MetaTensor(torch.cat(channels, dim=0), meta=meta, applied_operations=list(ref.applied_operations))
        d[self.output_key] = stacked
        d[self.available_key] = torch.tensor([float(s in present) for s in self.sequences])
        return d


def case_name_formatter(metadict: Mapping, saver: Any) -> dict:
    """``SaveImage``'s ``output_name_formatter`` for cases: ``<case>_seg.nii.gz`` rather than the reference file's
    name (every case folder may hold a ``FLAIR.nii.gz``); MONAI's default where no case is named."""
    from monai.data.folder_layout import default_name_formatter

    if metadict and metadict.get("case"):  # with a suffix: MONAI strips one, and a case may have a dot in its name
        return {"subject": f"{metadict['case']}.nii.gz", "idx": None}
    return default_name_formatter(metadict, saver)


def _name(image: torch.Tensor) -> str:
    meta = getattr(image, "meta", {}) or {}
    return Path(str(meta.get("filename_or_obj", "a sequence"))).name


class KeepSequencesd(MapTransform):
    """An evaluation's availability combination: only ``keep`` (sequence names) stay available, the other channels
    are zeroed; ``None`` keeps every present sequence."""

    def __init__(
        self,
        sequences: Sequence[str],
        keep: Sequence[str] | None,
        image_key: str = "image",
        available_key: str = "available",
    ) -> None:
        super().__init__([image_key])
        names = None if keep is None else [canonical_modality(s, where="--eval_sequences") for s in keep]
        self.sequences, self.keep = tuple(sequences), None if names is None else tuple(dict.fromkeys(names))
        if self.keep is not None and (not self.keep or any(s not in self.sequences for s in self.keep)):
            raise InputError(f"--eval_sequences {list(keep)}: expected a non-empty subset of {', '.join(sequences)}")
        self.image_key, self.available_key = image_key, available_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.keep is None:
            return d
        present = d[self.available_key].tolist()
        keep = [k for k, s in enumerate(self.sequences) if s in self.keep and present[k] > 0]
        if len(keep) != len(self.keep):
            missing = [s for s in self.keep if not present[self.sequences.index(s)]]
            raise InputError(f"an evaluation from {', '.join(self.keep)} got a case without {', '.join(missing)}")
        return _keep(d, keep, self.image_key, self.available_key)


class FixedSubsetd(MapTransform):
    """Validation's counterpart of :class:`DropSequencesd`: each case keeps one non-empty subset of its present
    sequences, always the same one (chosen by a hash of its ``name_key`` file), so that the validation split
    covers the missing-sequence combinations and the best checkpoint is chosen on them, run after run."""

    def __init__(self, image_key: str = "image", available_key: str = "available", name_key: str = "label") -> None:
        super().__init__([image_key])
        self.image_key, self.available_key, self.name_key = image_key, available_key, name_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        present = [k for k, a in enumerate(d[self.available_key].tolist()) if a > 0]
        subsets = [s for n in range(1, len(present) + 1) for s in itertools.combinations(present, n)]
        name = d.get(self.name_key)
        meta = getattr(name, "meta", None)
        key = str(meta.get("filename_or_obj")) if meta else str(name)
        # the file's last three path parts: stable across machines, distinct where every subject's label has one
        # name (WMH's <subject>/wmh.nii.gz, MSSEG's <patient>/Masks/Consensus.nii.gz)
        keep = subsets[zlib.crc32("/".join(Path(key).parts[-3:]).encode()) % len(subsets)]
        return _keep(d, keep, self.image_key, self.available_key)


def _keep(d: dict, keep: Sequence[int], image_key: str, available_key: str) -> dict:
    """``d`` with only the ``keep`` channels available; the others zeroed."""
    available = torch.zeros_like(d[available_key])
    available[list(keep)] = 1.0
    image = d[image_key].clone()
    image[available == 0] = 0
    d[image_key], d[available_key] = image, available
    return d


class DropSequencesd(RandomizableTransform):
    """Training's sequence dropout: keep a random non-empty subset of the present sequences (uniform over those
    subsets, or weighted by ``prior(kept)``, ``kept`` the tuple of kept channel indices) and zero the others'
    channels. Validation keeps a fixed subset per case (:class:`FixedSubsetd`)."""

    def __init__(self, image_key: str = "image", available_key: str = "available", prior=None) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.image_key, self.available_key, self.prior = image_key, available_key, prior

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        present = [k for k, a in enumerate(d[self.available_key].tolist()) if a > 0]
        subsets = [s for n in range(1, len(present) + 1) for s in itertools.combinations(present, n)]
        weights = np.ones(len(subsets)) if self.prior is None else np.array([self.prior(s) for s in subsets], float)
        keep = subsets[self.R.choice(len(subsets), p=weights / weights.sum())]
        return _keep(d, keep, self.image_key, self.available_key)
