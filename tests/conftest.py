from __future__ import annotations

import os
import sys
from pathlib import Path

import PIL.Image
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the workers of `pytest -n N` share the machine's cores: each computes on its share, and the
    # composer subprocesses a test starts inherit it
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(_threads)
# Ultralytics (a reference of the YOLO tests) replaces PIL.Image.open and torch.save when imported;
# every test sees the real ones
_REAL = (PIL.Image.open, torch.save)


@pytest.fixture(autouse=True)
def _unpatched_libraries():
    PIL.Image.open, torch.save = _REAL
    yield


PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
COMPOSER = str(Path(sys.executable).parent / "composer")


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec text to a file in tmp_path and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
