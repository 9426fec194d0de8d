"""The edge never imports TensorFlow or Keras when a lite runtime is installed (checked in subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.images import PURPLE, cell_image
from support.model import make_test_bundle

HEAVY = ("tensorflow", "keras", "tf_keras", "jax", "torch")

RUN_CLI = """
import json, sys
from leukoedge.cli import main
codes = []
for args in json.loads(sys.argv[1]):
    try:
        main(args)
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code or 0)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_test_bundle(tmp_path_factory.getbasetemp() / "model-bundles"))


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


def test_importing_the_edge_package_stays_light() -> None:
    modules = [
        "leukoedge",
        "leukoedge.cli",
        "leukoedge.inference.batch",
        "leukoedge.cli.classify",
        "leukoedge.inference.classifier",
        "leukoedge.inference.model_info",
        "leukoedge.inference.runtime",
        "leukoedge.inference.bundle",
        "leukoedge.vision.images",
    ]
    code = "import importlib, json, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_classify_and_models_run_without_tensorflow(model: str, tmp_path: Path) -> None:
    cell_image(PURPLE, 1).save(tmp_path / "cell.jpg")
    field = tmp_path / "field.png"
    cell_image(PURPLE, 2, size=320).save(field)
    runs = [
        ["classify", "--model", model, str(tmp_path / "cell.jpg")],
        ["classify", "--model", model, "--field", "--format", "csv", str(field)],
        ["models", "--model", model],
        ["--help"],
    ]
    proc = _run(RUN_CLI, json.dumps(runs), json.dumps(HEAVY))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0], "heavy": []}


def test_import_time_log_has_no_tensorflow(model: str, tmp_path: Path) -> None:
    cell_image(PURPLE, 1).save(tmp_path / "cell.jpg")
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "leukoedge",
            "classify",
            "--model",
            model,
            str(tmp_path / "cell.jpg"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line
    }
    assert "ai_edge_litert" in imported
    assert not imported & set(HEAVY)


def test_training_commands_without_tensorflow_say_what_to_install(tmp_path) -> None:
    """Where TensorFlow is not installed, `leukoedge train` names the extra instead of a traceback."""
    import subprocess
    import sys

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from leukoedge.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    for cls in ("malignant", "non_malignant"):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(data / cls / f"{i}.png")
    result = subprocess.run(
        [sys.executable, "-c", blocker, "train", "--data", str(data), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'leukoedge[train]'" in result.stderr
    assert "Traceback" not in result.stderr
