"""A MONAI Label server for this app on 127.0.0.1, started and stopped by PID: what the integration tests, the
benchmarks and the PACS tooling drive (``LocalServer(work, studies, conf).start()``)."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["APP_DIR", "BUNDLE", "LocalServer", "free_port", "wait_for_training"]

APP_DIR = Path(__file__).resolve().parent
BUNDLE = APP_DIR.parent / "bundle"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``monailabel start_server`` with the MoME app, bound to 127.0.0.1 on a free port, stopped by its PID.

    The app folder is copied into ``work`` first, because ``start_server`` creates ``model/``, ``logs/`` and
    ``bin/`` inside the app folder. Outbound HTTP(S) goes to a dead proxy, so a download attempt fails loudly.
    """

    def __init__(
        self, work: Path, studies: Path | str, conf: dict[str, str], env: dict[str, str] | None = None
    ) -> None:
        self.work = Path(work)
        self.studies = str(studies)  # a folder or a DICOMweb URL (a Path would fold its '//')
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


def wait_for_training(client, timeout: float = 600) -> dict:
    """Poll ``GET /train/`` until the latest task is DONE or ERROR."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.train_status()
        if task.get("status") in ("DONE", "ERROR", "STOPPED"):
            return task
        time.sleep(0.5)
    raise TimeoutError(f"training did not finish within {timeout} s")
