.PHONY: test lint default-model bench aarch64-check

test:
	python -m pytest -q

lint:
	ruff check . && ruff format --check .

# Retrain and requantize the bundled default model (the differential LeukoNet) from ../shared/data.
default-model:
	bash tools/build_default_model.sh

bench:
	leukoedge bench

aarch64-check:
	bash tools/aarch64_check.sh
