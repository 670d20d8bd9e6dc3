"""A throw-away Orthanc PACS with its DICOMweb plugin, started as a plain process (never the system service).

The storage folder and the generated configuration live in one folder the caller owns; stopping the server leaves
them for inspection unless the folder was a temporary one. Orthanc 1.10 (Debian 12) has no option to choose the
address its HTTP server binds to, so ``RemoteAccessAllowed: false`` makes it answer loopback clients only, and its
DICOM (DIMSE) port is switched off: everything goes through DICOMweb on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from monailabel_app.local import free_port

__all__ = ["DICOMWEB_PLUGIN", "Orthanc", "OrthancError"]

#: Where Debian's ``orthanc-dicomweb`` package puts the plugin.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancError(RuntimeError):
    """Orthanc is missing, did not start, or refused a request."""


class Orthanc:
    """``with Orthanc(folder) as pacs: pacs.dicomweb`` -> ``http://127.0.0.1:PORT/dicom-web``."""

    def __init__(self, folder: str | Path | None = None, port: int | None = None, timeout_s: float = 30.0) -> None:
        self._temporary = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="orthanc-")) if folder is None else Path(folder)
        self.port = port or free_port()
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "mome-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "StudiesMetadata": "Full"},
            "HttpDescribeErrors": True,  # error details in the HTTP answer, for the caller's message
            "StableAge": 1,  # a series counts as complete 1 s after its last instance
        }

    def start(self) -> Orthanc:
        binary = shutil.which("Orthanc")
        if binary is None or not DICOMWEB_PLUGIN.is_file():
            raise OrthancError(
                "Orthanc with its DICOMweb plugin is not installed: on Debian, as root, "
                "`apt-get install orthanc orthanc-dicomweb` (the tests and `make pacs` need both)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        with (self.folder / "orthanc.log").open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited with {self.process.returncode}; see {self.folder / 'orthanc.log'}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise OrthancError(f"Orthanc did not answer on {self.url} within {self.timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._temporary:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the REST calls the tests and `make pacs` need ---------------------------------------------------------
    def get(self, path: str) -> Any:
        r = requests.get(f"{self.url}{path}", timeout=30)
        if not r.ok:
            raise OrthancError(f"GET {path}: {r.status_code} {r.text[:200]}")
        return r.json()

    def series(self) -> list[dict[str, Any]]:
        """Every stored series with its main DICOM tags (Modality, SeriesInstanceUID, SeriesDescription...)."""
        return [self.get(f"/series/{s}") for s in self.get("/series")]

    def instances_of(self, series_uid: str) -> list[bytes]:
        """The DICOM files of one series, by its SeriesInstanceUID."""
        found = requests.post(f"{self.url}/tools/lookup", data=series_uid, timeout=30).json()
        ids = [f["ID"] for f in found if f["Type"] == "Series"]
        if not ids:
            raise OrthancError(f"series {series_uid} is not stored")
        return [
            requests.get(f"{self.url}/instances/{i}/file", timeout=30).content
            for i in self.get(f"/series/{ids[0]}")["Instances"]
        ]
