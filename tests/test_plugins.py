"""Third-party blocks through the `composer.blocks` entry-point group.

Each test writes a tiny plugin package into tmp_path, installs it offline with pip into its
own `--target` folder, and runs composer in a subprocess with that folder on PYTHONPATH, so
the plugin is discovered exactly as an installed distribution would be, and this test
process's registry is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COMPOSER = str(Path(sys.executable).parent / "composer")
ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "pipelines" / "cnn_classifier.yaml"

SCALE_MODULE = '''
"""A third-party block: multiply by a constant factor."""
from typing import ClassVar

from torch import nn

from composer import Block, In, PortType, register


class ScaleModule(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


@register
class Scale(Block):
    """Multiply the input by a constant factor."""
    name: ClassVar[str] = "scale"
    family: ClassVar[str] = "myplug"
    inputs: ClassVar = {"x": In("tensor", doc="any float tensor")}
    factor: float = 1.0

    def infer(self, x: PortType) -> PortType:
        return x

    def param_count(self, **inputs) -> int:
        return 0

    def build(self, x: PortType) -> nn.Module:
        return ScaleModule(self.factor)
'''

DUPLICATE_MODULE = '''
from typing import ClassVar

from torch import nn

from composer import Block, In, register


@register
class MyRelu(Block):
    """A plugin that tries to take over the built-in `relu`."""
    name: ClassVar[str] = "relu"
    inputs: ClassVar = {"x": In("tensor")}

    def infer(self, x):
        return x

    def build(self, x):
        return nn.ReLU()
'''

BROKEN_MODULE = '''
import composer_plugin_dependency_that_is_not_installed  # noqa: F401
'''

SPEC = """\
pipeline: plugged
inputs:
  x: {kind: vector, shape: [B, 8]}
blocks:
  fc: {block: dense, in: x, out_features: 4}
  scaled: {block: scale, in: fc, factor: 2.5}
outputs:
  y: scaled
"""


def make_plugin(tmp: Path, dist: str, module: str, source: str) -> Path:
    """Write a plugin project and install it offline into `tmp/site-<dist>`; return that folder."""
    project = tmp / dist
    project.mkdir()
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1.0"

        [project.entry-points."composer.blocks"]
        {dist} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
        """))
    (project / f"{module}.py").write_text(source)
    site = tmp / f"site-{dist}"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--target", str(site), str(project)],
        capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    entry_points = next(site.glob(f"{dist}-*.dist-info")) / "entry_points.txt"
    assert "[composer.blocks]" in entry_points.read_text()
    return site


def run(args: list[str], site: Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def python(code: str, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", textwrap.dedent(code)], site, cwd)


@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> dict[str, Path]:
    """The three plugins, installed once for the module: a good one, a duplicate, a broken one."""
    tmp = tmp_path_factory.mktemp("plugins")
    return {
        "good": make_plugin(tmp, "myplug", "myplug_blocks", SCALE_MODULE),
        "duplicate": make_plugin(tmp, "dupplug", "dupplug_blocks", DUPLICATE_MODULE),
        "broken": make_plugin(tmp, "brokenplug", "brokenplug_blocks", BROKEN_MODULE),
    }


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "plugged.yaml"
    path.write_text(SPEC)
    return path


def test_plugin_block_validates_from_the_cli(plugins, spec, tmp_path):
    proc = run([COMPOSER, "validate", str(spec), str(CNN)], plugins["good"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{spec}: ok" in proc.stdout
    assert f"{CNN}: ok" in proc.stdout


def test_plugin_block_is_in_the_catalog(plugins, tmp_path):
    proc = run([COMPOSER, "blocks", "scale"], plugins["good"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scale" in proc.stdout and "myplug" in proc.stdout
    assert "Multiply the input by a constant factor." in proc.stdout
    assert "factor" in proc.stdout


def test_plugin_block_builds_and_runs(plugins, spec, tmp_path):
    proc = python(f"""
        import torch
        import composer
        pipe = composer.load({str(spec)!r})
        model = pipe.build(seed=0).eval()
        x = torch.randn(2, 8)
        out = model(x=x)
        assert set(out) == {{"y"}}, out.keys()
        assert out["y"].shape == (2, 4), out["y"].shape
        assert torch.allclose(out["y"], model.fc(x) * 2.5)
        assert "self.scaled(" in model.code
        print("OK")
        """, plugins["good"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK")


def test_without_the_plugin_its_block_is_unknown(spec, tmp_path):
    proc = run([COMPOSER, "validate", str(spec)], tmp_path / "no-such-site", tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "E102" in proc.stderr and "scale" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugin_param_is_validated(plugins, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("factor: 2.5", "factr: 2.5"))
    proc = run([COMPOSER, "validate", str(bad)], plugins["good"], tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{bad}:6:" in proc.stderr and "E103" in proc.stderr and "factor" in proc.stderr


def test_duplicate_block_name_is_rejected_from_python(plugins, tmp_path):
    proc = python(f"""
        import composer
        from composer.registry import RegistryError
        try:
            composer.load({str(CNN)!r})
        except RegistryError as exc:
            print("REJECTED:", exc)
        else:
            raise SystemExit("a plugin re-registering `relu` was accepted")
        """, plugins["duplicate"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    msg = proc.stdout
    assert "REJECTED:" in msg
    assert "'relu'" in msg and "registered twice" in msg
    assert "blocks.core.activations.ReLU" in msg and "dupplug_blocks.MyRelu" in msg


@pytest.fixture(scope="module")
def duplicate_cli(plugins, tmp_path_factory) -> subprocess.CompletedProcess:
    return run([COMPOSER, "validate", str(CNN)], plugins["duplicate"], tmp_path_factory.mktemp("dup"))


def test_duplicate_block_name_fails_the_cli(duplicate_cli):
    proc = duplicate_cli
    assert proc.returncode != 0
    assert "ok" not in proc.stdout
    assert "block type 'relu' is registered twice" in proc.stderr
    assert "dupplug_blocks.MyRelu" in proc.stderr


def test_duplicate_block_name_cli_error_has_no_traceback(duplicate_cli):
    proc = duplicate_cli
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "dupplug" in proc.stderr  # names the plugin that caused it


def test_duplicate_block_name_is_rejected_every_time(plugins, tmp_path):
    proc = python(f"""
        import composer
        from composer.registry import RegistryError
        for attempt in range(2):
            try:
                composer.load({str(CNN)!r})
            except RegistryError:
                print("rejected", attempt)
        """, plugins["duplicate"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n")[:2] == ["rejected 0", "rejected 1"], proc.stdout


def test_broken_plugin_does_not_break_other_specs(plugins, tmp_path):
    proc = run([COMPOSER, "validate", str(CNN)], plugins["broken"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{CNN}: ok" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_broken_plugin_is_reported(plugins, tmp_path):
    proc = python(f"""
        import torch
        import composer
        from composer.registry import plugin_errors
        pipe = composer.load({str(CNN)!r})
        out = pipe.build(seed=0)(image=torch.randn(1, 3, 64, 64))
        assert out["probs"].shape == (1, 10)
        errors = plugin_errors()
        assert len(errors) == 1, errors
        print(errors[0])
        """, plugins["broken"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "brokenplug" in proc.stdout and "composer_plugin_dependency_that_is_not_installed" in proc.stdout
    listing = run([COMPOSER, "blocks"], plugins["broken"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "brokenplug" in listing.stderr and "failed to load" in listing.stderr
    assert "relu" in listing.stdout


def test_broken_plugin_beside_a_good_one(plugins, spec, tmp_path):
    """One broken plugin does not keep another plugin's blocks from loading."""
    site = os.pathsep.join([str(plugins["broken"]), str(plugins["good"])])
    proc = run([COMPOSER, "validate", str(spec)], Path(site), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{spec}: ok" in proc.stdout
