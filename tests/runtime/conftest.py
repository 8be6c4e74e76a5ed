from __future__ import annotations

import pytest

from tests.export.conftest import TINY_CNN, tiny_pipe, tiny_spec  # noqa: F401  (shared fixtures)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """One verified export of the tiny CNN, shared by the runtime tests (read-only)."""
    import composer
    folder = tmp_path_factory.mktemp("tiny_onnx")
    spec = folder / "tiny_cnn.yaml"
    spec.write_text(TINY_CNN)
    path = folder / "tiny_cnn.onnx"
    composer.export(composer.load(spec), path)
    return path
