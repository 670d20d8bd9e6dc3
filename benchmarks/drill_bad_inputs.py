"""Bad-input drill: every kind of bad input against the three doors a user has -- the inference CLI, the datalist
CLI and the MONAI Label server -- judged only from the outside (exit code, what was printed, HTTP status, what was
left on disk), so the same drill runs against any revision of the project.

    python benchmarks/drill_bad_inputs.py --root . [--out drill.json] [--only cli datalist server]

``--root`` is a checkout (this one, or an older one in a git worktree); the drill uses its ``bundle/`` and
``monailabel_app/`` and this venv. A case passes when the door refuses with a non-zero exit code (CLI) or a 4xx
(server), names the file or key, prints one line (no traceback) on the CLI, keeps serving, and leaves nothing
behind (no stored label or image, no file outside the studies folder, no temporary file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from phantoms.corrupt import AFFINE, IMAGE_KINDS, LABEL_KINDS, head


def _nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def image_cases() -> dict[str, Callable[[Path], Path]]:
    return IMAGE_KINDS


def label_cases() -> dict[str, Callable[[Path], Path]]:
    return LABEL_KINDS


_head = head


# --- doors -------------------------------------------------------------------------------------------------------
def _one_line(text: str, name: str) -> bool:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and "warn" not in ln.lower()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return bool(errors) and "Traceback" not in text and any(name in ln for ln in errors) and len(errors) <= 2


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    try:  # run from the revision's bundle folder: its `scripts` come first on the path
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    return res.returncode, res.stdout + res.stderr


def cli_cases(root: Path, work: Path, weights: Path) -> list[dict]:
    bundle = root / "bundle"
    knobs = ["--preset", "small", "--spacing", "2.0", "--register", "False", "--sw_roi_size", "[48,48,48]"]
    rows = []
    for kind, make in image_cases().items():
        d = work / "cli" / kind.replace(" ", "_")
        d.mkdir(parents=True)
        path = make(d)
        out = d / "out"
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
        cmd += ["--input", str(path), "--ckpt_dir", str(weights.parent), "--output_dir", str(out), *knobs]
        code, text = _run(cmd, bundle)
        written = list(out.rglob("*")) if out.exists() else []
        ok = code != 0 and _one_line(text, path.name) and not written
        rows.append({"door": "inference CLI", "kind": kind, "exit": code, "one_line": _one_line(text, path.name),
                     "written": len(written), "ok": ok, "tail": text.strip().splitlines()[-1:] if text else []})
    return rows


def train_cases(root: Path, work: Path) -> list[dict]:
    """The training CLI: bad knobs and bad datalists, with data-loader workers on (where aborts used to happen)."""
    bundle = root / "bundle"
    d = work / "train"
    d.mkdir()
    image, label = _head()
    items = [{"image": str(_nii(d / f"img{i}_t1.nii.gz", image)), "label": str(_nii(d / f"lab{i}.nii.gz", label)),
              "modality": "T1"} for i in range(2)]  # fmt: skip
    (d / "checkpoint.pt").write_bytes(b"not a checkpoint")
    base = ["--preset", "small", "--spacing", "2.0", "--register", "False", "--patch_size", "[32,32,32]",
            "--sw_roi_size", "[48,48,48]", "--num_workers", "2", "--epochs", "1", "--iterations_per_epoch", "1",
            "--batch_size", "1", "--progress_bar", "False"]  # fmt: skip
    cases = {
        "--epochs -1": ({}, ["--epochs", "-1"], "epochs"),
        "--patch_size not a multiple of the stride": ({}, ["--patch_size", "[30,30,30]"], "patch_size"),
        "--register false (a string)": ({}, ["--register", "false"], "register"),
        "missing image in the datalist (workers on)": ({"image": str(d / "nope_t1.nii.gz")}, [], "nope_t1.nii.gz"),
        "unknown modality in the datalist": ({"modality": "flare"}, [], "flare"),
        "corrupt checkpoint.pt on resume": ({}, ["--resume", "True"], "checkpoint.pt"),
    }
    rows = []
    for kind, (change, extra, name) in cases.items():
        folder = d / kind.replace(" ", "_").replace("/", "")
        folder.mkdir()
        data = [dict(items[0], **change), items[1]]
        (folder / "datalist.json").write_text(json.dumps({"training": data, "validation": [items[1]]}))
        out = folder / "models"
        if "checkpoint" in kind:
            out.mkdir()
            shutil.copy(d / "checkpoint.pt", out / "checkpoint.pt")
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--dataset_dir",
               str(folder), "--ckpt_dir", str(out), "--output_dir", str(folder / "eval"), *base, *extra]  # fmt: skip
        code, text = _run(cmd, bundle)
        one = _one_line(text, name)
        rows.append({"door": "training CLI", "kind": kind, "exit": code, "one_line": one, "written": 0,
                     "ok": code not in (0, 134) and one, "tail": text.strip().splitlines()[-1:]})  # fmt: skip
    return rows


def datalist_cases(root: Path, work: Path) -> list[dict]:
    bundle = root / "bundle"
    rows = []
    good, label = _head()
    cases: dict[str, tuple[Callable[[Path], Path], str]] = {k: (v, "image") for k, v in image_cases().items()}
    cases.update({k: (v, "label") for k, v in label_cases().items()})
    cases["unknown modality in the CSV"] = (lambda d: _nii(d / "img_t1.nii.gz", good), "modality")
    for kind, (make, role) in cases.items():
        d = work / "datalist" / kind.replace(" ", "_")
        d.mkdir(parents=True)
        if role == "label":
            image, lab = _nii(d / "img_t1.nii.gz", good), make(d)
        else:
            image, lab = make(d), _nii(d / "lab.nii.gz", label)
        modality = "flare" if role == "modality" else "T1"
        (d / "list.csv").write_text(f"image,label,modality\n{image.name},{lab.name},{modality}\n")
        out = d / "datalist.json"
        code, text = _run([sys.executable, "-m", "scripts.data.datalist", "--csv", str(d / "list.csv"), "--out",
                           str(out)], bundle)  # fmt: skip
        name = "flare" if role == "modality" else (lab.name if role == "label" else image.name)
        ok = code != 0 and _one_line(text, name) and not out.exists()
        rows.append({"door": "datalist CLI", "kind": kind, "exit": code, "one_line": _one_line(text, name),
                     "written": int(out.exists()), "ok": ok, "tail": text.strip().splitlines()[-1:]})
    return rows


class _Server:
    def __init__(self, root: Path, work: Path, studies: Path, weights: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = work / "app"
        shutil.copytree(root / "monailabel_app", app, ignore=shutil.ignore_patterns("model", "logs", "bin"))
        self.tmp = work / "tmp"
        self.tmp.mkdir()
        conf = {"models": "mome", "bundle": str(root / "bundle"), "model_dir": str(weights.parent), "weights": "none",
                "spacing": "2", "register": "false", "sw_roi_size": "48"}  # fmt: skip
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        for k, v in conf.items():
            cmd += ["--conf", k, v]
        env = {**os.environ, "TMPDIR": str(self.tmp), "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
        self.log = (work / "server.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=work)
        for _ in range(240):
            if self.request("GET", "/info/")[0] == 200:
                return
            time.sleep(0.5)
        raise RuntimeError("server did not start")

    def request(self, method: str, path: str, files: dict | None = None, timeout: float = 120) -> tuple[int, str]:
        body, headers = None, {}
        if files:
            boundary = "drillboundary"
            parts = []
            for field, (name, data) in files.items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                             "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")  # fmt: skip
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return res.status, res.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except OSError as e:
            return 0, str(e)

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        self.proc.kill()
        self.log.close()


def server_cases(root: Path, work: Path, weights: Path) -> list[dict]:
    studies = work / "studies"
    studies.mkdir()
    good, _ = _head()
    _nii(studies / "case0_flair.nii.gz", good)
    outside = work / "outside"
    outside.mkdir()
    _nii(outside / "secret_t1.nii.gz", good)
    server = _Server(root, work, studies, weights)
    rows = []

    def state() -> tuple[set[str], set[str]]:
        kept = {str(p.relative_to(work)) for p in (*studies.rglob("*"), *outside.rglob("*")) if p.is_file()}
        datastore = studies / "datastore_v2.json"
        objects = json.loads(datastore.read_text()).get("objects", {}) if datastore.is_file() else {}
        return kept - {"studies/datastore_v2.json", "studies/.lock"}, {json.dumps(objects, sort_keys=True)}

    def record(kind: str, status: int, text: str, before: tuple) -> None:
        alive = server.request("GET", "/info/", timeout=30)[0] == 200
        after = state()
        left = sorted(after[0] - before[0]) + sorted(p.name for p in server.tmp.glob("tmp*") if p.suffix != ".json")
        changed = after[1] != before[1]
        ok = 400 <= status < 500 and alive and not left and not changed
        rows.append({"door": "server", "kind": kind, "status": status, "alive": alive, "left_behind": left[:3],
                     "datastore_changed": changed, "ok": ok, "detail": text[:160]})  # fmt: skip
        for p in server.tmp.iterdir():  # the next case starts clean
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    try:  # (MONAI Label writes its logging config as tmp*.json at start-up: not an upload)
        for kind, make in image_cases().items():
            d = work / "srv" / kind.replace(" ", "_")
            d.mkdir(parents=True)
            path = make(d)
            data = path.read_bytes() if path.is_file() else b""
            before = state()
            status, text = server.request("PUT", "/datastore/image?image=bad", files={"file": (path.name, data)})
            record(f"upload: {kind}", status, text, before)
        for kind, make in label_cases().items():
            d = work / "srv" / kind.replace(" ", "_")
            d.mkdir(parents=True)
            path = make(d)
            before = state()
            status, text = server.request(
                "PUT", "/datastore/label?image=case0_flair&tag=final", files={"label": (path.name, path.read_bytes())}
            )
            record(f"label: {kind}", status, text, before)
        for kind, image in (
            ("infer: absolute path as image id", str(outside / "secret_t1.nii.gz")),
            ("infer: '..' in image id", "../outside/secret_t1"),
            ("infer: very long image id", "x" * 5000),
            ("infer: NUL in image id", "case0\x00flair"),
        ):
            before = state()
            status, text = server.request("POST", f"/infer/mome?image={urllib.request.quote(image, safe='')}")
            record(kind, status, text, before)
        blob = (studies / "case0_flair.nii.gz").read_bytes()
        for kind, image_id in (
            ("upload: '..' in image id", "../outside/planted"),
            ("upload: absolute image id", str(outside / "planted2")),
            ("upload: very long image id", "y" * 5000),
        ):
            before = state()
            quoted = urllib.request.quote(image_id, safe="")
            status, text = server.request("PUT", f"/datastore/image?image={quoted}", files={"file": ("x.nii.gz", blob)})
            record(kind, status, text, before)
        before = state()
        status, text = server.request(
            "PUT", "/datastore/label?image=nosuchimage&tag=final", files={"label": ("l.nii.gz", blob)}
        )
        record("label for an unknown image id", status, text, before)
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", nargs="+", default=["cli", "train", "datalist", "server"])
    args = parser.parse_args(argv)
    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="drill_"))
    import torch

    from scripts.mome import MoME  # random small-preset weights; the state-dict format is that of every revision

    weights = work / "weights" / "model.pt"
    weights.parent.mkdir()
    torch.save({"model": MoME("small").state_dict()}, weights)
    rows: list[dict] = []
    if "cli" in args.only:
        rows += cli_cases(root, work, weights)
    if "train" in args.only:
        rows += train_cases(root, work)
    if "datalist" in args.only:
        rows += datalist_cases(root, work)
    if "server" in args.only:
        rows += server_cases(root, work, weights)
    for r in rows:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['door']:14s} {r['kind']:45s} {r.get('exit', r.get('status'))}")
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} cases handled")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
