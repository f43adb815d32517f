# whisper-tune: thin targets over the `whisper-tune` CLI.
# Override any variable on the command line, e.g. `make train WORK=work MODEL=openai/whisper-small.en`.
PYTHON      ?= python3
VENV        ?= .venv
# torch is left open in pyproject; here we pick the build. The default takes the CPU build that lies on
# this kind of machine's disk. On a GPU box use e.g. `make install TORCH_SPEC=torch` (CUDA build from PyPI).
TORCH_SPEC  ?= torch==2.13.0
EXTRAS      ?= dev
CSV         ?= data/demo/final_generated_dataset.csv
WORK        ?= work
MODEL       ?= bundled:tiny.en
CONFIG      ?= whisper-tune.toml
OUTPUT_DIR  ?= $(WORK)/model
JOBS        ?= 0
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
WT    := $(BIN)/whisper-tune
CFG    = $(if $(wildcard $(CONFIG)),--config $(CONFIG),)

.PHONY: install test validate features train evaluate demo bench bench-gpu clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

validate: install
	$(WT) validate --csv $(CSV) --work $(WORK) --model $(MODEL) $(CFG)

features: validate
	$(WT) features --work $(WORK) --model $(MODEL) --jobs $(JOBS) $(CFG)

train: install
	$(WT) train --work $(WORK) --model $(MODEL) --output-dir $(OUTPUT_DIR) $(CFG)

evaluate: install
	$(WT) evaluate --model $(OUTPUT_DIR) --baseline $(MODEL) --work $(WORK) $(CFG)

demo: install
	$(BIN)/python data/demo/run_demo.py --work work/demo

bench: install
	$(BIN)/python bench/features_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/packing_bench.py
	$(BIN)/python bench/cluster_bench.py

bench-gpu: install
	$(BIN)/python bench/gpu_bench.py
	$(BIN)/python bench/lora_bench.py

clean:
	rm -rf work
