# make test       set up .venv (pinned versions) and run the whole test suite
# make notebooks  set up .venv and run every notebook headlessly into outputs/
# make lab        set up .venv and open JupyterLab on the notebooks
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup test notebooks lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-lock.txt
	touch $@

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest

notebooks: setup
	$(PY) -m helpers.run_notebooks

lab: setup
	$(PY) -m jupyter lab notebooks/

clean:
	rm -rf $(VENV) outputs .pytest_cache
