# Two entry points for a newcomer (see README): `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned, so no other package makes pip pick a different (multi-GB) build.
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: venv demo test test-zoo setup-test system-deps bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

venv: $(BIN)/python

demo: venv
	$(PIP) "$(TORCH)"
	$(PIP) -e ".[chgnet]"
	$(BIN)/dynamat demo

setup-test: venv
	$(PIP) "$(TORCH)"
	$(PIP) -e ".[test]"
	$(PIP) --no-deps -e examples/dynamat-example-plugin  # a plugin model family the tests serve

# Debian packages some tests need (headless Chromium for the report page, SLURM for campaigns, CP2K for
# generated references);
# root only, skipped otherwise.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  need=""; \
	  [ -x /usr/bin/chromium ] || need="$$need chromium"; \
	  command -v slurmctld >/dev/null || need="$$need slurm-wlm"; \
	  command -v cp2k.psmp >/dev/null || need="$$need cp2k cp2k-data"; \
	  if [ -n "$$need" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi; \
	else echo "system-deps: not root; tests that need Chromium, SLURM or CP2K will skip"; fi

# Everything, the model zoo included: its tests build .venvs/{mace,zoo,grace} (several GB, ~5 min the first time).
test: setup-test system-deps
	$(BIN)/python -m pytest -q -ra

test-zoo: setup-test
	$(BIN)/python -m pytest -q -ra -m zoo tests/driver/test_driver_zoo.py

bench: setup-test
	$(BIN)/python benchmarks/bench_md_overhead.py

clean:
	rm -rf $(VENV) runs *.egg-info
