"""The anatomy comes from files inside the installed nilearn wheel: nothing is downloaded, ever."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from phantoms import load_anatomy, synthesize
from phantoms.anatomy import template_files

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    load_anatomy.cache_clear()
    yield
    load_anatomy.cache_clear()


def test_anatomy_loads_with_sockets_blocked(no_network: None) -> None:
    with pytest.raises(OSError, match="network access"):
        socket.create_connection(("example.org", 80))
    anat = load_anatomy(2)
    assert anat.full_shape == (99, 117, 95)
    assert np.allclose(anat.full_affine[:3, 3], (-97.5, -133.5, -71.5))
    gm, wm, csf = (float(a.sum()) * 8 / 1000 for a in (anat.gm, anat.wm, anat.csf))
    assert 950 < gm < 1050 and 640 < wm < 700 and 190 < csf < 240  # ml, as the design measured
    assert 15 < float(anat.vent.sum()) * 8 / 1000 < 30
    subject = synthesize("brats2021", 0, spacing=2, seed=0)
    assert subject.label.any()
    assert all(p.is_file() and "nilearn" in p.parts for p in template_files().values())


def test_loading_imports_nothing_that_could_download() -> None:
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "import sys\n"
        "from phantoms import load_anatomy\n"
        "load_anatomy(2)\n"
        "assert 'nilearn' not in sys.modules, 'nilearn was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=BUNDLE, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
