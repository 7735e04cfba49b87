# Two entry points (see README): `make demo` runs the whole workflow at demo scale on CPU,
# `make test` runs the test suite. Both build .venv (and the system packages the tests need) first.
VENV ?= .venv
CORES ?= all
SNAKEMAKE_ARGS ?=

.PHONY: demo test env system lint clean

env:
	@scripts/setup-env.sh $(VENV)

system:
	@scripts/setup-system.sh

demo: env
	. $(VENV)/bin/activate && snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

test: env system
	. $(VENV)/bin/activate && ruff check . && python -m pytest $(PYTEST_ARGS)

lint: env
	. $(VENV)/bin/activate && ruff check . && snakemake --lint

clean:
	rm -rf results logs .snakemake
