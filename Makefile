# Each target installs what it needs into .venv (torch first: the CPU build from local disk).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow check-report bench reproduce clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13.0 first: here it is a CPU build on local disk (a bare range would fetch a CUDA build)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q "torch>=2.3,<=2.14.1"
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/miam demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

# the demo's report.html in headless Chromium at 1280 px (Debian's chromium, installed when missing)
check-report: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow tests/test_report_html.py
	@echo "screenshot: build/check-report/report-1280.png"

bench: $(STAMP)
	$(BIN)/python benchmarks/prepare_bench.py
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/eval_bench.py
	$(BIN)/python benchmarks/attribution_bench.py
	$(BIN)/python benchmarks/map_bench.py

reproduce: $(STAMP)
	$(BIN)/python benchmarks/reproduce.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
