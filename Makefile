# The two set-up commands of the README: `make demo` and `make test`. Both bootstrap
# .venv (and the Debian packages the tests need, when run as root) on first use.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA  ?= ../shared/data

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd) packaging/bootstrap.sh
	bash packaging/bootstrap.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bae demo --trace $(DATA)/nasa-http/nasa_19950801.tsv

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m pytest -q perf --benchmark-only --benchmark-columns=median,ops,rounds

clean:
	rm -rf $(VENV) build *.egg-info ext/*.c ext/*.so ext/*.html
