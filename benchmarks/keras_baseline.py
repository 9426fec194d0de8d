"""The baseline process: import TensorFlow, get a Keras LeukoNet, classify one image with ``predict``.

This is what classifying one image cost in the design leukoedge replaces. ``bench_vs_keras.py``
runs it as a fresh process to time it end to end and to read its peak memory; it prints one JSON
line with the time of each step. Usage: ``python keras_baseline.py IMAGE [--keras-model PATH]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def load_model(path: str | None) -> Any:
    """The trained model if given, else an untrained LeukoNet (timing does not depend on weights)."""
    if path:
        from leukoedge.quantize.convert import load_keras_model

        return load_keras_model(path)
    from leukoedge.train.model import build_leukonet

    return build_leukonet(seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image")
    parser.add_argument("--keras-model")
    args = parser.parse_args()
    t0 = time.perf_counter()
    import tensorflow  # noqa: F401

    t1 = time.perf_counter()
    model = load_model(args.keras_model)
    t2 = time.perf_counter()
    from leukoedge.vision.images import load_cell

    x = load_cell(args.image)[None].astype("float32")
    p = float(model.predict(x, verbose=0)[0, 0])
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "model_s": t2 - t1, "first_predict_s": t3 - t2, "p": p}))


if __name__ == "__main__":
    main()
