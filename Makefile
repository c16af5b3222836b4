# The two commands of the README: `make demo` and `make test`. Both bootstrap everything on a
# fresh machine that has python3 and make: uv (from PyPI) and the locked environment (uv.lock).

SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_COMPILE_BYTECODE := 1
RUN := $(UV) run --frozen --all-extras --quiet
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test setup lint docs docs-pictures images bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || { \
	  echo "installing uv from PyPI"; \
	  python3 -m pip --version >/dev/null 2>&1 || python3 -m ensurepip --user >/dev/null 2>&1 || python3 -m ensurepip >/dev/null; \
	  python3 -m pip install --user --quiet uv 2>/dev/null || python3 -m pip install --quiet uv 2>/dev/null || \
	  python3 -m pip install --user --quiet --break-system-packages uv; }
	$(UV) sync --frozen --all-extras --quiet
	@touch $@

setup: .venv/.synced  ## install uv if needed and sync the locked environment

# Azurite, the Azure Blob Storage emulator the az:// tests start (tools/azurite/package-lock.json).
# Without Node.js those tests skip and say why.
tools/azurite/node_modules/.installed: tools/azurite/package.json tools/azurite/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tools/azurite --no-audit --no-fund --ignore-scripts --loglevel=error && touch $@; \
	else echo "npm not found: the az:// tests (Azurite) will be skipped"; fi

demo: setup  ## run the ZenML pipeline on the built-in demo dataset, then classify one recording
	$(RUN) python -m pipelines.run --demo-data
	@rec=$$(sed -n 2p outputs/predictions.csv | cut -d, -f1); \
	  echo; echo "$$ audioflow predict outputs/model.onnx data/$$rec"; \
	  $(RUN) audioflow predict outputs/model.onnx "data/$$rec"

test: setup tools/azurite/node_modules/.installed  ## lint, then run the test suite
	$(RUN) ruff check audioflow steps pipelines tests benchmarks tools
	$(RUN) hadolint docker/Dockerfile*
	$(RUN) pytest $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/): built strictly into site/ (a broken link, a page
# missing from the nav or a stale anchor fails it; tests/test_docs.py builds it too).
# `uv run mkdocs serve` serves it while you edit. The generated references and the pictures:
# `uv run python -m tools.docs.reference --write`, `make docs-pictures` (a real demo run, Chromium).
docs: setup  ## build the documentation site into site/ (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict

docs-pictures: setup  ## regenerate the pictures in docs/img/ from a real demo run (needs chromium)
	$(RUN) --with "zenml[server]==0.98.0" python -m tools.docs.pictures

# Both images with docker or podman (docker/build.sh): from local bases made with mmdebstrap
# when the public ones cannot be pulled; then a smoke test (a tiny training run, its model served).
images: setup  ## build the steps and serve images and smoke-test them (docker/build.sh)
	docker/build.sh

lint: setup  ## ruff, and hadolint on the Dockerfiles
	$(RUN) ruff check audioflow steps pipelines tests benchmarks tools
	$(RUN) hadolint docker/Dockerfile*

# Every benchmark in benchmarks/ (tests/test_benchmarks.py checks this list is complete):
# featurize vs librosa on FSDD (~1 min; skips without ../shared/data/fsdd), three ZenML runs of
# the demo pipeline in a temporary project (~3 min on 2 cores), per-stage costs on FSDD, then
# PyTorch eager vs ONNX Runtime FP32/INT8 and the HTTP service (~2 min), then the exported
# front-end three ways (~30 s), the training loop against bare forward/backward (~3 min),
# training with AMP against fp32 (on a GPU; on a CPU only a check that it runs, ~2 min),
# then accuracy on every collection in ../shared/data, the defaults against a plain baseline on the
# same splits (FSDD official and leave one speaker out, ESC-10 five folds: about 80 min on 2 cores;
# skips without data; `python -m benchmarks.accuracy --ablate all` adds a run per default turned off).
bench: setup  ## every benchmark in benchmarks/, ~90 min (see docs/BENCHMARKS.md)
	$(RUN) python -m benchmarks.images
	$(RUN) python -m benchmarks.featurize_vs_librosa
	$(RUN) python -m benchmarks.zenml_runs
	$(RUN) python -m benchmarks.stage_costs
	$(RUN) python -m benchmarks.inference_speed
	$(RUN) python -m benchmarks.front_end
	$(RUN) python -m benchmarks.train_throughput
	$(RUN) python -m benchmarks.train_amp
	$(RUN) python -m benchmarks.accuracy

clean:  ## remove generated data, artifacts and outputs (not the environment)
	rm -rf artifacts outputs site
