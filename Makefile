# Two commands do all the set-up on a fresh machine: `make reproduce` and `make test`.
# Both create .venv and install the package on first use; a second `make setup` does nothing.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
LOCK    := requirements.lock
# The lock is made for one platform, the one the tests and the committed figures ran on.
LOCK_PLATFORM := Linux x86_64, Python 3.11
IS_LOCK_PLATFORM = $(PY) -c "import platform, sys; sys.exit(not (platform.system() == 'Linux' and platform.machine() == 'x86_64' and sys.version_info[:2] == (3, 11)))"
# The torch release the lock is made with (the one this project's machines carry).
LOCK_TORCH ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= quick
ARGS    ?=
JOBS    ?= auto
TEST_WORKERS ?= auto
FMNIST_DEB := /usr/share/datasets/fashion-mnist

.PHONY: setup lock test reproduce rehearse gpu-check figures lab api-docs data browser cluster-packages slurm-local slurm-local-stop deviations clean-results help

PROFILES := $(sort $(basename $(notdir $(wildcard configs/*.yaml))))

help:
	@echo "make reproduce [PROFILE=quick] [JOBS=auto] [ARGS='--stage train ...']"
	@echo "               PROFILE: one of $(PROFILES) (configs/<profile>.yaml)"
	@echo "               JOBS=auto: one run per GPU (every GPU of the machine), or 2 at a time without one;"
	@echo "               ARGS='--devices cuda:0,cuda:1' or ARGS='--executor slurm --slurm-partition gpu'"
	@echo "               ends by comparing the new tables with the committed ones: figures/<profile>/reproduction.md"
	@echo "make rehearse PROFILE=cifar10   the study shrunk to minutes, into results/<profile>-rehearsal/"
	@echo "make gpu-check  the prepared GPU measurements (benchmarks/gpu_check.py), report in benchmarks/results/"
	@echo "               (on a GPU image without network: python benchmarks/gpu_check.py, docs/full-scale.md)"
	@echo "make test      run the test suite (CPU, offline; installs Debian's Fashion-MNIST and Chromium when absent)"
	@echo "make lock      remake requirements.lock (the exact environment make setup installs) from pyproject.toml"
	@echo "make figures   rebuild figures/\$$PROFILE from saved results (no model needed)"
	@echo "make deviations  the effect of each of the authors' settings on the quick study: figures/deviations/"
	@echo "make lab       open the notebooks in JupyterLab"
	@echo "make slurm-local  a one-node SLURM cluster here (Debian's packages) to try --executor slurm; make slurm-local-stop"
	@echo "make api-docs  rewrite docs/api.md (every public function and class) from the code"

setup: $(STAMP)

# Installs the exact, tested environment (requirements.lock: every package and version), then
# the package itself without touching it. Re-installs only when pyproject.toml or the lock
# changes. On another platform than the lock's, installs pyproject.toml's ranges and says so.
# The lock is installed by uv (the tool that makes it, from PyPI): it fetches, unpacks and
# byte-compiles in parallel. Compiled ahead because where PYTHONDONTWRITEBYTECODE is set (as on
# the machines the timings name) Python never writes what it compiles at import, and every
# process of the tests would compile torch, pandas and SciPy again (a fresh clone's tests took
# 847 s that way, 653 s compiled). The lock installed from an empty cache in 51 s with uv, 192 s
# with pip (AMD EPYC, 2 cores, 2026-12-04).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(IS_LOCK_PLATFORM); then \
	  echo "installing the locked environment ($(LOCK), $(LOCK_PLATFORM))"; \
	  $(PY) -m pip install -q "uv>=0.9" && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -r $(LOCK) && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e . ; \
	else \
	  echo "this machine is not the lock's platform ($(LOCK_PLATFORM)): installing the ranges of pyproject.toml"; \
	  $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e ".[dev,lab]" ; \
	fi
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (xai_utils)" >/dev/null
	touch $(STAMP)

# Remake the lock from pyproject.toml's ranges (uv pip compile; the newest versions within them).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "uv>=0.9"
	printf '%s\n' $(LOCK_TORCH) > $(VENV)/lock-torch.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra lab --python-version 3.11.7 \
	  --python-platform x86_64-manylinux_2_28 --constraint $(VENV)/lock-torch.txt \
	  --custom-compile-command "make lock" --quiet -o $(LOCK)

# Two pytest-xdist workers on two cores (one per core elsewhere), whole modules each, the longest
# first (tests/conftest.py); `make test TEST_WORKERS=0` runs the suite in one process.
test: setup data browser cluster-packages
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Fashion-MNIST offline: Debian ships it. Looked for where the loader looks (the data folder,
# XAI_UTILS_DATA or ~/.cache/xai_utils, then Debian's); installed when absent and apt-get is
# usable; otherwise say exactly what to do.
FMNIST_WHERE = XAI_UTILS_NO_DOWNLOAD=1 $(PY) -c "from xai_utils.study.data.fashion_mnist import \
  locate_fashion_mnist as f; print(f('train', None, False)[0].parent, f('test', None, False)[0].parent)" 2>/dev/null

data: setup
	@if where=$$($(FMNIST_WHERE)); then \
	  echo "Fashion-MNIST: found in $${where%% *}"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) || \
	  echo "Fashion-MNIST: apt-get failed; it will be downloaded by torchvision if online"; \
	else \
	  echo "Fashion-MNIST not found. Either run 'sudo apt-get install dataset-fashion-mnist'"; \
	  echo "or put the four *-ubyte.gz files in $${XAI_UTILS_DATA:-$$HOME/.cache/xai_utils}/FashionMNIST/raw/"; \
	  echo "(torchvision's layout), or stay online: torchvision downloads it on first use."; \
	fi

# Keeps the committed tables of figures/$(PROFILE) before the run overwrites them, and ends by
# comparing the new ones with them (figures/$(PROFILE)/reproduction.md; a moved number does not
# fail the target: the comparison's own exit status is for `python -m xai_utils.reproduction`).
reproduce: setup data
	@$(PY) -m xai_utils.reproduction --keep $(PROFILE)
	$(PY) -m xai_utils.pipeline --profile $(PROFILE) $(if $(filter --executor%,$(ARGS)),,--jobs $(JOBS)) $(ARGS)
	@$(PY) -m xai_utils.reproduction --check $(PROFILE)

rehearse: setup data
	$(PY) -m xai_utils.pipeline --profile $(PROFILE) --rehearse $(if $(filter --executor%,$(ARGS)),,--jobs $(JOBS)) $(ARGS)

gpu-check: setup
	$(PY) benchmarks/gpu_check.py $(ARGS)

figures: setup
	$(PY) -m xai_utils.pipeline --profile $(PROFILE) --stage figures --force

# The measured effect of each deviation from the authors' code (docs/protocol-and-deviations.md):
# the quick study under this companion's protocol (its trained runs reused when results/quick has
# them), then copies of it re-explained and re-scored with one of the authors' settings each
# (only the stages the setting affects re-run); the tables go to figures/deviations/<name>/quick/.
DEVIATIONS := eigencam_sign:method_options.eigencam.sign=numpy noise_space:noise_space=official \
              black:pixel_flipping_baseline=black_normalised tie_break:pixel_flipping_tie_break=stable \
              nan_pairing:nan_pairing=per_model
deviations: setup data
	$(PY) -m xai_utils.pipeline --profile quick --set "protocols=[corrected]" \
	  --set figures_root=figures/deviations/corrected --jobs $(JOBS) $(ARGS)
	@for d in $(DEVIATIONS); do name=$${d%%:*}; setting=$${d#*:}; \
	  echo "deviation $$name: $$setting"; \
	  rm -rf results/deviations/$$name && mkdir -p results/deviations/$$name && \
	  cp -r $${XAI_RESULTS:-results}/quick results/deviations/$$name/ && \
	  $(PY) -m xai_utils.pipeline --profile quick --set "protocols=[corrected]" --set "$$setting" \
	    --set results_root=results/deviations/$$name --set figures_root=figures/deviations/$$name \
	    --jobs $(JOBS) $(ARGS) || exit 1; \
	done

# The browser test of JupyterLab (tests/test_lab.py) drives Debian's Chromium through Debian's
# chromedriver (no browser or driver is fetched by the tests); installed when absent and apt-get
# is usable, as Fashion-MNIST is.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
	  echo "Chromium: found in /usr/bin"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Chromium: installing Debian's chromium and chromium-driver"; \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null); \
	else \
	  echo "Chromium not found: run 'sudo apt-get install chromium chromium-driver' (tests/test_lab.py needs them)"; \
	fi

# A one-node SLURM cluster on this machine (xai_utils/pipeline/local_cluster.py) for trying the
# SLURM path: Debian's slurm-wlm, munge, slurmdbd and mariadb-server, installed when absent and
# apt-get is usable (tests/test_slurm.py runs the study on one). `make slurm-local` prints how to use it.
CLUSTER_PROGRAMS := /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmdbd /usr/sbin/munged /usr/sbin/mariadbd
cluster-packages:
	@if (for p in $(CLUSTER_PROGRAMS); do [ -x $$p ] || exit 1; done); then \
	  echo "SLURM, munge and MariaDB: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "SLURM, munge and MariaDB: installing Debian's slurm-wlm munge slurmdbd mariadb-server"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null); \
	else \
	  echo "SLURM not found: run 'sudo apt-get install slurm-wlm munge slurmdbd mariadb-server'"; \
	fi

SLURM_DIR ?= .slurm
slurm-local: setup cluster-packages
	@$(PY) -m xai_utils.pipeline.local_cluster start $(SLURM_DIR)

slurm-local-stop: setup
	@$(PY) -m xai_utils.pipeline.local_cluster stop $(SLURM_DIR)

lab: setup
	$(VENV)/bin/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/

api-docs: setup
	$(PY) -m xai_utils.reference > docs/api.md

clean-results:
	rm -rf $${XAI_RESULTS:-results}/$(PROFILE)
