"""MONAI Label app timings with a real server: start-up, auto-segmentation latency, train-request turnaround.

A ``monailabel start_server`` for ``monailabel_app`` on 127.0.0.1 (free port) over a datastore of 2 mm phantoms,
serving random small-preset weights (timings do not depend on what the weights learned), driven with MONAI Label's
own ``MONAILabelClient``, stopped by its PID:

* start: process launch until ``GET /info/`` answers;
* infer: ``POST /infer/mome`` on one phantom image, first request (loads the weights) and median of the rest;
* train: ``POST /train/mome`` (1 epoch, one pass over the labelled images) until the task reports DONE.

    python benchmarks/bench_monailabel.py [--smoke] [--reps 5] [--json OUT]

The server helper :class:`LocalServer` is also what the app's integration test uses.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from demo.commands import cpu_conf
from scripts.atomic import save_json

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "monailabel_app"
BUNDLE = ROOT / "bundle"

#: CPU knobs for 2 mm phantoms: a whole cropped skull-stripped phantom (about 74 x 93 x 79) fits one window.
PHANTOM_CONF = {**cpu_conf(), "patch_size": "32", "epochs": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``monailabel start_server`` with the MoME app, bound to 127.0.0.1 on a free port, stopped by its PID.

    The app folder is copied into ``work`` first, because ``start_server`` creates ``model/``, ``logs/`` and
    ``bin/`` inside the app folder. Outbound HTTP(S) goes to a dead proxy, so a download attempt fails loudly.
    """

    def __init__(self, work: Path, studies: Path, conf: dict[str, str], env: dict[str, str] | None = None) -> None:
        self.work = Path(work)
        self.studies = Path(studies)
        self.conf = {"models": "mome", "bundle": str(BUNDLE), **conf}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.work / "server.log"
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> float:
        """Launch and wait until ``/info/`` answers 200; returns the seconds that took."""
        app = self.work / "app"
        if not app.exists():
            shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__", "model", "logs", "bin"))
        cmd = [
            sys.executable,
            "-m",
            "monailabel.main",
            "start_server",
            "--app",
            str(app),
            "--studies",
            str(self.studies),
        ]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        for key, value in self.conf.items():
            cmd += ["--conf", key, value]
        env = {
            **os.environ,
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            **self.env,
        }
        env.pop("MONAI_LABEL_RELOAD_APP_LIB", None)  # the server behaves as in production
        start = time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work)
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with code {self.process.returncode}:\n{self.tail()}")
            if self.get("/info/")[0] == 200:
                return time.perf_counter() - start
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.tail()}")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            res = conn.getresponse()
            return res.status, res.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def stop(self) -> None:
        """Terminate the server by its PID, and the task processes it started (training, scoring) by theirs;
        kill whatever has not exited after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        import psutil

        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.terminate()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        _, alive = psutil.wait_procs(children, timeout=20)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def phantom_studies(work: Path, subjects: int = 2) -> tuple[Path, dict[str, Path]]:
    """A datastore of 2 mm BraTS-like phantoms named ``<subject>_<sequence>.nii.gz``; returns it and the labels."""
    from phantoms import generate

    out = work / "phantoms"
    manifest = generate(out, profiles=["brats2021"], subjects=subjects, spacing=2, seed=0, workers=1)
    studies = work / "studies"
    studies.mkdir(parents=True)
    labels = {}
    for subject in manifest["profiles"]["brats2021"]["subjects"]:
        for modality, rel in subject["images"].items():
            name = f"{subject['subject']}_{modality.lower()}"
            shutil.copy(out / rel, studies / f"{name}.nii.gz")
            labels[name] = out / subject["label"]
    return studies, labels


def random_weights(path: Path) -> Path:
    import torch

    from scripts.mome import MoME

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": MoME("small").state_dict()}, path)
    return path


def wait_for_training(client, timeout: float = 600) -> dict:
    """Poll ``GET /train/`` until the latest task is DONE or ERROR."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.train_status()
        if task.get("status") in ("DONE", "ERROR", "STOPPED"):
            return task
        time.sleep(0.5)
    raise TimeoutError(f"training did not finish within {timeout} s")


@contextlib.contextmanager
def _workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_monailabel_") as tmp:
            yield Path(tmp)


def run(reps: int, smoke: bool, workdir: str | None = None) -> dict:
    from monailabel.client import MONAILabelClient

    from benchmarks.timing import cpu_busy_fraction, machine

    with _workdir(workdir) as work:
        studies, labels = phantom_studies(work, subjects=1 if smoke else 2)
        weights = random_weights(work / "model" / "model.pt")
        server = LocalServer(work, studies, {**PHANTOM_CONF, "model_dir": str(weights.parent), "weights": "none"})
        busy = [cpu_busy_fraction(1.0)]  # share of the machine used by others before each measurement
        start_s = server.start()
        try:
            client = MONAILabelClient(server.url, tmpdir=str(work))
            images = sorted(p.name[: -len(".nii.gz")] for p in studies.glob("*.nii.gz"))
            image = next(i for i in images if i.endswith("_flair"))
            infer_s = []
            for _ in range(reps + 1):
                busy.append(cpu_busy_fraction(1.0))
                t = time.perf_counter()
                label, _ = client.infer("mome", image, {})
                infer_s.append(time.perf_counter() - t)
                os.unlink(label)
            for name in images[: 1 if smoke else 3]:
                client.save_label(name, str(labels[name]), tag="final")
            busy.append(cpu_busy_fraction(1.0))
            t = time.perf_counter()
            client.train_start("mome", {"max_epochs": 1})
            task = wait_for_training(client)
            train_s = time.perf_counter() - t
            if task["status"] != "DONE":
                raise RuntimeError(f"training ended {task['status']}:\n" + "\n".join(task.get("details", [])))
        finally:
            server.stop()
    return {
        "machine": machine(),
        "smoke": smoke,
        "setup": {**PHANTOM_CONF, "window": "whole image", "image": image},
        "server_start_s": round(start_s, 2),
        "infer_first_s": round(infer_s[0], 2),
        "infer_median_s": round(statistics.median(infer_s[1:]), 2),
        "infer_s": [round(t, 2) for t in infer_s],
        "train_images": 1 if smoke else 3,
        "train_turnaround_s": round(train_s, 2),
        "cpu_busy_before": [round(b, 2) for b in busy],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one subject, two infer repetitions, one labelled image")
    parser.add_argument("--reps", type=int, default=5, help="infer repetitions after the first (default 5)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--workdir", help="keep the datastore, weights and server log here (default: a temp folder)")
    args = parser.parse_args(argv)
    result = run(1 if args.smoke else args.reps, args.smoke, args.workdir)
    print(f"machine: {result['machine']['cpu']} ({result['machine']['cores']} cores), gpu {result['machine']['gpu']}")
    print(f"server start          {result['server_start_s']:8.2f} s")
    print(f"infer, first request  {result['infer_first_s']:8.2f} s   (2 mm phantom, small preset, loads weights)")
    print(f"infer, median of {len(result['infer_s']) - 1}    {result['infer_median_s']:8.2f} s")
    print(f"train request, 1 epoch on {result['train_images']} images {result['train_turnaround_s']:8.2f} s")
    print(f"machine busy with other work before each step: {result['cpu_busy_before']}")
    if args.json:
        save_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
