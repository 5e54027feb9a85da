# Two commands a new user needs: `make demo` and `make test`. Both create .venv and install the package first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU-only machines get this CPU build of torch (an unpinned torch would pull gigabytes of CUDA packages).
TORCH_CPU_VERSION ?= 2.13.0
DEMO_OUT ?= demo_out

.PHONY: install demo test lint cuda-check bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "using the torch already installed for $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') is already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing torch with CUDA"; $(PY) -m pip install -q torch; \
	else \
	  echo "no GPU: installing the CPU build torch==$(TORCH_CPU_VERSION)"; $(PY) -m pip install -q torch==$(TORCH_CPU_VERSION); \
	fi
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/stylegan-disentangle demo --outdir $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -ra

cuda-check: install
	PYTHON=$(PY) bash scripts/check_cuda_compile.sh

bench: install
	$(PY) scripts/bench_generator.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info .pytest_cache .ruff_cache
