"""Runtime selection, and the inference wrapper's agreement across variants, runtimes and batching."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from support.images import PINK, PURPLE, cell_image
from support.model import make_test_bundle

from leukoedge.errors import RuntimeMissingError
from leukoedge.inference import runtime as rt
from leukoedge.inference.bundle import load_bundle
from leukoedge.inference.classifier import CellClassifier, ClassifierOptions
from leukoedge.vision.images import load_cell, to_model_input

#: One step of the uint8 sigmoid output (scale 1/256).
STEP = 1 / 256


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.getbasetemp() / "model-bundles"
    return {v: make_test_bundle(base, v) for v in ("int8", "int8_io", "float32")}


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Clear purple and pink cells, plus random-colour crops that spread p over (0, 1)."""
    rng = np.random.default_rng(3)
    clear = [to_model_input(np.asarray(cell_image(c, seed=i))) for i in range(6) for c in (PURPLE, PINK)]
    levels = rng.uniform(40, 240, (58, 1, 1, 3))
    noisy = np.clip(levels + rng.normal(0, 25, (58, 64, 64, 3)), 0, 255).astype(np.uint8)
    return np.concatenate([np.stack(clear), noisy])


def _classifier(path: Path, **options: object) -> CellClassifier:
    return CellClassifier(load_bundle(path), ClassifierOptions(**options))


# -- selection ------------------------------------------------------------------------------------
def _fake_imports(monkeypatch: pytest.MonkeyPatch, installed: set[str]) -> list[str]:
    """Make only ``installed`` runtimes importable (as fakes); return the import attempts."""
    tried: list[str] = []

    class FakeInterpreter:
        pass

    def fake_import(name: str) -> types.ModuleType:
        top = name.split(".")[0]
        tried.append(top)
        if top not in installed:
            raise ImportError(f"No module named {top!r}")
        module = types.ModuleType(name)
        module.Interpreter = FakeInterpreter  # type: ignore[attr-defined]
        return module

    monkeypatch.setattr(rt.importlib, "import_module", fake_import)
    monkeypatch.setattr(rt, "_cache", {})
    monkeypatch.delenv(rt.RUNTIME_ENV, raising=False)
    return tried


@pytest.mark.parametrize(
    ("installed", "chosen"),
    [
        ({"ai_edge_litert", "tflite_runtime", "tensorflow"}, "ai_edge_litert"),
        ({"tflite_runtime", "tensorflow"}, "tflite_runtime"),
        ({"tensorflow"}, "tensorflow"),
    ],
)
def test_runtimes_are_tried_in_order(
    monkeypatch: pytest.MonkeyPatch, installed: set[str], chosen: str
) -> None:
    tried = _fake_imports(monkeypatch, installed)
    assert rt.get_runtime().name == chosen
    order = list(rt.RUNTIMES)
    assert list(dict.fromkeys(tried)) == order[: order.index(chosen) + 1]


def test_no_runtime_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_imports(monkeypatch, set())
    with pytest.raises(RuntimeMissingError) as e:
        rt.get_runtime()
    assert "pip install ai-edge-litert" in str(e.value) and "tflite-runtime" in str(e.value)


def test_forced_runtime_by_option_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_imports(monkeypatch, {"ai_edge_litert", "tensorflow"})
    assert rt.get_runtime("tensorflow").name == "tensorflow"
    monkeypatch.setenv(rt.RUNTIME_ENV, "tensorflow")
    assert rt.get_runtime().name == "tensorflow"
    with pytest.raises(RuntimeMissingError, match="pip install 'tflite-runtime"):
        rt.get_runtime("tflite_runtime")
    with pytest.raises(RuntimeMissingError, match="unknown runtime"):
        rt.get_runtime("onnx")


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from leukoedge.cli import main
main(sys.argv[1:])
"""


def test_cli_without_any_runtime_exits_2(bundles: dict[str, Path], tmp_path: Path) -> None:
    cell_image(PURPLE, 1).save(tmp_path / "a.jpg")
    args = ["classify", "--model", str(bundles["int8"]), str(tmp_path / "a.jpg")]
    proc = subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no TFLite runtime is installed" in proc.stderr and "pip install ai-edge-litert" in proc.stderr
    assert proc.stdout == ""


# -- the wrapper ------------------------------------------------------------------------------------
def test_quantization_is_read_from_the_tensors(bundles: dict[str, Path]) -> None:
    u8 = _classifier(bundles["int8"])
    s8 = _classifier(bundles["int8_io"])
    f32 = _classifier(bundles["float32"])
    assert (u8.input.dtype, u8.input.scale, u8.input.zero_point) == (np.uint8, 1.0, 0)
    assert (s8.input.dtype, s8.input.zero_point, s8.output.zero_point) == (np.int8, -128, -128)
    assert u8.output.scale == pytest.approx(STEP) and not f32.input.quantized


def test_int8_agrees_with_float(bundles: dict[str, Path], crops: np.ndarray) -> None:
    p_float = _classifier(bundles["float32"]).predict_proba(crops)
    assert p_float.min() < 0.2 and p_float.max() > 0.8  # the crops span both labels
    for variant in ("int8", "int8_io"):
        clf = _classifier(bundles[variant])
        p = clf.predict_proba(crops)
        assert np.abs(p - p_float).max() <= 4 * STEP, variant
        clear = np.abs(p_float - clf.threshold) > 0.05
        labels = [r.label for r in clf.classify(crops)]
        float_labels = np.where(p_float >= clf.threshold, "malignant", "non_malignant")
        assert clear.sum() > 40
        assert [lab for lab, c in zip(labels, clear, strict=True) if c] == list(float_labels[clear])
    assert {r.label for r in _classifier(bundles["int8"]).classify(crops[:12])} == {
        "malignant",
        "non_malignant",
    }


def test_int8_input_variant_matches_uint8(bundles: dict[str, Path], crops: np.ndarray) -> None:
    p_u8 = _classifier(bundles["int8"]).predict_proba(crops)
    p_s8 = _classifier(bundles["int8_io"]).predict_proba(crops)
    assert np.abs(p_u8 - p_s8).max() <= STEP


def test_batches_equal_single_crops(bundles: dict[str, Path], crops: np.ndarray) -> None:
    clf = _classifier(bundles["int8"], batch_size=32)
    batched = clf.predict_proba(crops)  # 2 full batches and 6 single crops
    single = np.array([clf.predict_proba(c)[0] for c in crops])
    assert np.abs(batched - single).max() <= STEP
    two_threads = _classifier(bundles["int8"], num_threads=2).predict_proba(crops)
    assert np.abs(two_threads - single).max() <= STEP
    assert clf.predict_proba(crops[:0]).shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict_proba(crops.astype(np.float32))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tensorflow_lite_runtime_agrees(bundles: dict[str, Path], crops: np.ndarray) -> None:
    # imported here, not left to whichever test ran before: the result must not depend on test order
    pytest.importorskip("tensorflow", reason="the tf.lite fallback needs the [train] extra")
    # the lite side is named too, so neither LEUKOEDGE_RUNTIME nor a cached choice makes it tf vs tf
    lite_names = [name for name in rt.available_runtimes() if name != "tensorflow"]
    if not lite_names:
        pytest.skip("no lite TFLite runtime (ai-edge-litert, tflite-runtime) is installed")
    lite_clf = _classifier(bundles["int8"], runtime=lite_names[0])
    assert lite_clf.runtime.name == lite_names[0]
    lite = lite_clf.predict_proba(crops)
    tf = _classifier(bundles["int8"], runtime="tensorflow")
    assert tf.runtime.name == "tensorflow"
    assert np.abs(tf.predict_proba(crops) - lite).max() <= STEP


def test_real_cells_classify_identically_by_file_and_array(bundles: dict[str, Path], aml_dir: Path) -> None:
    files = sorted((aml_dir / "val" / "MYO").glob("*.jpg"))[:5]
    clf = _classifier(bundles["int8"])
    p = clf.predict_proba(np.stack([load_cell(f) for f in files]))
    assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))


def test_native_runtime_chatter_stays_off_stderr(
    bundles: dict[str, Path], capfd: pytest.CaptureFixture
) -> None:
    _classifier(bundles["int8"], batch_size=8).predict_proba(np.zeros((9, 64, 64, 3), np.uint8))
    assert "XNNPACK" not in capfd.readouterr().err


def test_input_table_quantizes_every_pixel_value() -> None:
    from leukoedge.inference.classifier import TensorQuant, input_table

    pixels = np.arange(256)
    s8 = input_table(TensorQuant(np.dtype(np.int8), (1, 64, 64, 3), 1.0, -128))
    assert s8 is not None and s8.dtype == np.int8 and np.array_equal(s8, pixels - 128)
    coarse = input_table(TensorQuant(np.dtype(np.uint8), (1, 64, 64, 3), 2.0, 3))
    assert coarse is not None and np.array_equal(coarse, np.clip(np.round(pixels / 2.0) + 3, 0, 255))
    assert input_table(TensorQuant(np.dtype(np.uint8), (1, 64, 64, 3), 0.9999968, 0)) is None
    assert input_table(TensorQuant(np.dtype(np.float32), (1, 64, 64, 3), 0.0, 0)) is None


def test_quantize_input_is_the_one_quantizer_for_every_input_dtype() -> None:
    from leukoedge.inference.classifier import TensorQuant, quantize_input

    cells = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    s8 = quantize_input(TensorQuant(np.dtype(np.int8), (1, 16, 16, 3), 1.0, -128), cells)
    assert s8.dtype == np.int8 and int(s8.min()) == -128 and int(s8.max()) == 127
    f32 = quantize_input(TensorQuant(np.dtype(np.float32), (1, 16, 16, 3), 0.0, 0), cells)
    assert f32.dtype == np.float32 and float(f32.max()) == 255.0
    same = quantize_input(TensorQuant(np.dtype(np.uint8), (1, 16, 16, 3), 1.0, 0), cells[:, ::2])
    assert same.flags.c_contiguous and np.array_equal(same, cells[:, ::2])
    with pytest.raises(ValueError):
        quantize_input(TensorQuant(np.dtype(np.uint8), (1, 16, 16, 3), 1.0, 0), cells.astype(np.float32))
