"""The spec's `labels:` key: built-in lists, lists and files, located errors, resolve, schema,
ONNX metadata, and class names in `composer run`."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

import composer
from composer import SpecError
from composer.cli import app
from composer.emit import to_yaml
from composer.labels import builtin, top_k_text
from composer.spec import Preprocess
from tests.conftest import ROOT
from tests.export.conftest import TINY_CNN

runner = CliRunner()

IMAGENET_PIPELINES = ["classification", "mobilenet_v3", "efficientnet_b0", "densenet121", "inception_v3",
                      "vit_b16", "resnet50"]

SPEC = """\
pipeline: labelled
{labels}
inputs:
  x: {{kind: vector, shape: [B, 16]}}
blocks:
  head: {{block: dense, in: x, out_features: 3}}
  probs: {{block: softmax, in: head}}
outputs:
  logits: head
  probs: probs
"""


def spec(write_spec, labels: str, name: str = "spec.yaml"):
    return write_spec(SPEC.format(labels=labels), name)


def errors_of(path):
    with pytest.raises(SpecError) as info:
        composer.load(path)
    return info.value.errors


def test_builtin_lists_come_from_torchvision():
    imagenet, coco = builtin("imagenet"), builtin("coco")
    assert len(imagenet) == 1000 and imagenet[285] == "Egyptian cat" and imagenet[0] == "tench"
    assert len(coco) == 91 and coco[0] == "__background__" and coco[1] == "person" and coco[12] == "N/A"


@pytest.mark.parametrize("name", IMAGENET_PIPELINES)
def test_imagenet_pipelines_name_their_classes(name):
    labels = composer.load(ROOT / "pipelines" / f"{name}.yaml").resolved.labels
    assert labels is not None and labels.builtin == "imagenet" and len(labels) == 1000
    assert labels.name(285) == "Egyptian cat"


def test_a_list_in_the_spec(write_spec):
    labels = composer.load(spec(write_spec, "labels: [cat, dog, bird]")).resolved.labels
    assert labels.names == ("cat", "dog", "bird") and labels.source == "list" and labels.builtin is None
    assert labels.name(2) == "bird" and labels.name(7) == "7" and labels.name(-1) == "-1"


def test_a_file_next_to_the_spec(write_spec, tmp_path):
    (tmp_path / "classes.txt").write_bytes("\ufeffcat\r\n  dog  \r\nbird\r\n\r\n\r\n".encode())
    labels = composer.load(spec(write_spec, "labels: classes.txt")).resolved.labels
    assert labels.names == ("cat", "dog", "bird") and labels.source == "classes.txt"


def test_no_labels(write_spec):
    assert composer.load(spec(write_spec, "")).resolved.labels is None


@pytest.mark.parametrize("labels, files, code, line, col, message, more", [
    ("labels: imagnet", {}, "E105", 2, 9, "unknown label list `imagnet`", "did you mean `imagenet`?"),
    ("labels: cocoa", {}, "E105", 2, 9, "unknown label list `cocoa`", "did you mean `coco`?"),
    ("labels: classes.txt", {}, "E009", 2, 9, "labels file `classes.txt` not found", "relative to this spec"),
    ("labels: classes.txt", {"classes.txt": b""}, "E105", 2, 9, "labels file `classes.txt` is empty",
     "one class name per line"),
    ("labels: classes.txt", {"classes.txt": b"\n\n"}, "E105", 2, 9, "is empty", ""),
    ("labels: classes.txt", {"classes.txt": b"cat\n\ndog\n"}, "E105", 2, 9, "has an empty line (line 2)", "N/A"),
    ("labels: classes.txt", {"classes.txt": b"cat\n\xff\xfe\n"}, "E009", 2, 9, "is not UTF-8 text", ""),
    ("labels: classes.txt", {"classes.txt": b"cat\ndog\n"}, "E302", 2, 9,
     "`labels` has 2 names, but output `logits` (vector [B, 3]) has 3 classes (as does `probs`)",
     "2 names from `classes.txt`"),
    ("labels: []", {}, "E105", 2, 9, "`labels` is an empty list", ""),
    ('labels: ""', {}, "E105", 2, 9, "`labels` is empty", ""),
    ("labels: [cat, 3, dog]", {}, "E105", 2, 15, "label 1 is not a name", 'write it in quotes'),
    ("labels: {cat: 1}", {}, "E105", 2, 9, "invalid value for `labels`", "a list of names"),
    ("labels: 7", {}, "E105", 2, 9, "invalid value for `labels`", "7 (int)"),
    ("labels: [cat, dog]", {}, "E302", 2, 9, "`labels` has 2 names, but output `logits`", "3 names, one per class"),
    ("labels: imagenet", {}, "E302", 2, 9, "`labels` has 1000 names, but output `logits` (vector [B, 3]) has 3",
     "1000 names from `imagenet`"),
])
def test_label_errors(write_spec, tmp_path, labels, files, code, line, col, message, more):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    path = spec(write_spec, labels)
    errors = errors_of(path)
    assert len(errors) == 1, [e.format() for e in errors]
    e = errors[0]
    text = e.format()
    assert (e.code, e.loc.line, e.loc.col, e.loc.file) == (code, line, col, str(path)), text
    assert e.path.startswith("labels") and message in text and more in text, text


def test_label_errors_come_with_the_others_in_one_pass(write_spec):
    path = write_spec(SPEC.format(labels="labels: imagnet").replace("out_features: 3", "out_features: 3, kernal: 1"))
    codes = [e.code for e in errors_of(path)]
    assert sorted(codes) == ["E103", "E105"]


def test_a_directory_is_not_a_labels_file(write_spec, tmp_path):
    (tmp_path / "classes.txt").mkdir()
    (e,) = errors_of(spec(write_spec, "labels: classes.txt"))
    assert e.code == "E009" and "is not a file" in e.message


def test_sub_pipelines_need_no_labels_of_their_own(write_spec):
    write_spec(SPEC.format(labels="labels: [only, one]"), "part.yaml")   # would not match if it were used
    path = write_spec(textwrap.dedent("""\
        pipeline: outer
        labels: [a, b, c]
        inputs:
          x: {kind: vector, shape: [B, 16]}
        blocks:
          inner: {spec: part.yaml, in: x}
        outputs:
          logits: inner.logits
        """), "outer.yaml")
    assert composer.load(path).resolved.labels.names == ("a", "b", "c")


def test_resolve_shows_the_labels_and_round_trips(write_spec, tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    for labels, shown in (("labels: classes.txt", "labels: [cat, dog, bird]"), ("labels: [x, y, z]", "labels: [x, y, z]")):
        pipe = composer.load(spec(write_spec, labels))
        text = to_yaml(pipe.resolved)
        assert shown in text
        flat = tmp_path / "flat.yaml"
        flat.write_text(text)
        assert composer.load(flat).resolved.labels.names == pipe.resolved.labels.names
    r = runner.invoke(app, ["resolve", str(ROOT / "pipelines" / "classification.yaml")])
    assert r.exit_code == 0 and "\nlabels: imagenet\n" in r.output


def test_schema_has_the_labels_key(tmp_path):
    r = runner.invoke(app, ["schema", "-o", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    prop = json.loads((tmp_path / "s.json").read_text())["properties"]["labels"]
    kinds = {alt["type"] for alt in prop["anyOf"]}
    assert kinds == {"string", "array"} and "imagenet" in prop["description"]


def test_top_k_with_names():
    names = builtin("imagenet")
    scores = np.zeros(1000)
    scores[285], scores[281] = 0.71, 0.12
    assert top_k_text(scores, scores, 2, names) == "Egyptian cat 0.710, tabby 0.120"
    assert top_k_text(scores, scores, 2, None) == "285: 0.710, 281: 0.120"


def test_preprocess_scale_as_a_fraction():
    assert Preprocess(scale="1/255").scale == pytest.approx(1 / 255)
    assert Preprocess.model_validate({"scale": 0.5}).scale == 0.5
    with pytest.raises(Exception):
        Preprocess(scale="1/0")


LABELLED_CNN = TINY_CNN.replace("seed: 0\n", "seed: 0\nlabels: [cat, dog, bird, fish, frog]\n")


def test_run_and_export_name_the_classes(write_spec, tmp_path):
    import onnx
    path = write_spec(LABELLED_CNN, "tiny_labelled.yaml")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["run", str(path), "-i", f"image={tmp_path / 'x.npy'}", "--top-k", "3"])
    assert r.exit_code == 0, r.output
    torch_line = next(l for l in r.output.splitlines() if "top-3" in l)
    assert "class: prob" not in torch_line and any(n in torch_line for n in ("cat ", "dog ", "bird ", "fish ", "frog "))

    model = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(path), "-o", str(model)])
    assert r.exit_code == 0, r.output
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(meta["composer.labels"]) == ["cat", "dog", "bird", "fish", "frog"]
    assert json.loads(meta["composer.outputs"]) == {"logits": "vector", "probs": "probs"}
    r = runner.invoke(app, ["run", str(model), "-i", f"image={tmp_path / 'x.npy'}", "--top-k", "3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    onnx_lines = [l for l in r.output.splitlines() if "top-3" in l]
    assert onnx_lines[0].split("top-3")[1].split(", ")[0].rsplit(" ", 1)[0] == \
        torch_line.split("top-3")[1].split(", ")[0].rsplit(" ", 1)[0]
