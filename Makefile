# make test       set up .venv (pinned versions) and run the whole test suite
# make notebooks  set up .venv and run every notebook headlessly into outputs/
# make lab        set up .venv and open JupyterLab on the notebooks
# make colab-twin run every notebook on a twin of Colab's runtime (Python 3.13, Colab's package list)
# make gpu-check  set up .venv and measure every loading plan on this machine's CUDA GPU (random weights)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup browser test notebooks lab gpu-check colab-twin clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-lock.txt
	touch $@

# The studio's browser test drives Debian's Chromium through Playwright (never Playwright's own
# browser download). Installed with apt when missing and we are root; otherwise says how.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser test needs Chromium at /usr/bin/chromium: sudo apt-get install chromium"; exit 1; \
	  fi; }

# Both cores (pytest-xdist): each test file runs on one worker, so a module-scoped fixture (an
# executed notebook, a measured benchmark) is made once; a notebook that tests in two files read
# executes once per session all the same (notebook_harness.executed_once, a file lock).
PYTEST_WORKERS ?= 2
test: setup browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

notebooks: setup
	$(PY) -m tools.run_notebooks

colab-twin: setup
	HF_HUB_OFFLINE=1 $(PY) -m tools.colab_twin --run outputs/colab-twin

gpu-check: setup
	HF_HUB_OFFLINE=1 $(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

lab: setup
	$(PY) -m jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) outputs .pytest_cache
