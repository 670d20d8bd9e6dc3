"""MONAI Label app timings with a real server: start-up, auto-segmentation latency, train-request turnaround.

A ``monailabel start_server`` for ``monailabel_app`` on 127.0.0.1 (free port) over a datastore of 2 mm phantoms,
serving random small-preset weights (timings do not depend on what the weights learned), driven with MONAI Label's
own ``MONAILabelClient``, stopped by its PID:

* start: process launch until ``GET /info/`` answers;
* infer: ``POST /infer/mome`` on one phantom image, first request (loads the weights) and median of the rest;
* train: ``POST /train/mome`` (1 epoch, one pass over the labelled images) until the task reports DONE.

    python benchmarks/bench_monailabel.py [--smoke] [--reps 5] [--json OUT]

The server is :class:`monailabel_app.local.LocalServer`, as in the app's integration test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from demo.commands import cpu_conf
from demo.studies import phantom_studies
from monailabel_app.local import LocalServer, wait_for_training
from scripts.atomic import save_json

ROOT = Path(__file__).resolve().parents[1]

#: CPU knobs for 2 mm phantoms: a whole cropped skull-stripped phantom (about 74 x 93 x 79) fits one window.
PHANTOM_CONF = {**cpu_conf(), "patch_size": "32", "epochs": "1"}


def random_weights(path: Path) -> Path:
    import torch

    from scripts.mome import MoME

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": MoME("small").state_dict()}, path)
    return path


@contextlib.contextmanager
def _workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_monailabel_") as tmp:
            yield Path(tmp)


def info_latency_during_inference(server: LocalServer, client, image: str, interval: float = 0.2) -> list[float]:
    """Seconds each ``GET /info/`` took while one ``POST /infer`` ran (a health check's view of the server)."""
    import threading

    done = threading.Event()
    worker = threading.Thread(target=lambda: (client.infer("mome", image, {}), done.set()), daemon=True)
    worker.start()
    latencies = []
    while not done.is_set():
        t = time.perf_counter()
        server.get("/info/")
        latencies.append(time.perf_counter() - t)
        time.sleep(interval)
    worker.join()
    return latencies


def run(reps: int, smoke: bool, workdir: str | None = None) -> dict:
    from monailabel.client import MONAILabelClient

    from benchmarks.timing import cpu_busy_fraction, machine

    with _workdir(workdir) as work:
        studies, labels = phantom_studies(work, subjects=1 if smoke else 2)
        weights = random_weights(work / "model" / "model.pt")
        server = LocalServer(work, studies, {**PHANTOM_CONF, "model_dir": str(weights.parent), "weights": "none"})
        idle_s = 0.1 if smoke else 1.0
        busy = [cpu_busy_fraction(idle_s)]  # share of the machine used by others before each measurement
        start_s = server.start()
        try:
            client = MONAILabelClient(server.url, tmpdir=str(work))
            images = sorted(p.name[: -len(".nii.gz")] for p in studies.glob("*.nii.gz"))
            image = next(i for i in images if i.endswith("_flair"))
            infer_s = []
            for _ in range(reps + 1):
                busy.append(cpu_busy_fraction(idle_s))
                t = time.perf_counter()
                label, _ = client.infer("mome", image, {})
                infer_s.append(time.perf_counter() - t)
                os.unlink(label)
            info_s = info_latency_during_inference(server, client, image)
            for name in images[: 1 if smoke else 3]:
                client.save_label(name, str(labels[name]), tag="final")
            busy.append(cpu_busy_fraction(idle_s))
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
        "info_during_inference_s": {
            "median": round(statistics.median(info_s), 3),
            "max": round(max(info_s), 3),
            "n": len(info_s),
        },
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
