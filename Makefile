# Two commands do all the set-up on a fresh machine: `make reproduce` and `make test`.
# Both create .venv and install the package on first use; a second `make setup` does nothing.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= quick
ARGS    ?=
JOBS    ?= 2
FMNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: setup test reproduce figures lab data clean-results help

help:
	@echo "make reproduce [PROFILE=quick|smoke|cifar10|imagenet_s50] [JOBS=2] [ARGS='--stage train ...']"
	@echo "               ARGS='--devices all' (JOBS=number of GPUs) or ARGS='--executor slurm --slurm-partition gpu'"
	@echo "make test      run the test suite (CPU, offline)"
	@echo "make figures   rebuild figures/\$$PROFILE from saved results (no model needed)"
	@echo "make lab       open the notebooks in JupyterLab"

setup: $(STAMP)

# Re-installs only when pyproject.toml changes. torch/torchvision come from PyPI (CUDA wheels,
# about 5 GB, they run on CPU too); numpy stays below 2.4 for quantus 0.6.0.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (xai_utils)" >/dev/null
	touch $(STAMP)

test: setup data
	$(PY) -m pytest -q

# Fashion-MNIST offline: Debian ships it. Installed when nothing else provides it and
# apt-get is usable; otherwise say exactly what to do.
data:
	@if [ -d "$(FMNIST_DEB)" ] || ls data/FashionMNIST/raw/*ubyte* >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) || \
	  echo "Fashion-MNIST: apt-get failed; it will be downloaded by torchvision if online"; \
	else \
	  echo "Fashion-MNIST not found. Either run 'sudo apt-get install dataset-fashion-mnist'"; \
	  echo "or put the four *-ubyte.gz files in data/FashionMNIST/raw/ (torchvision layout),"; \
	  echo "or stay online: torchvision downloads it on first use."; \
	fi

reproduce: setup data
	$(PY) -m xai_utils.pipeline --profile $(PROFILE) $(if $(filter --executor%,$(ARGS)),,--jobs $(JOBS)) $(ARGS)

figures: setup
	$(PY) -m xai_utils.pipeline --profile $(PROFILE) --stage figures --force

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-results:
	rm -rf results/$(PROFILE)
