# make bench                      every fleet benchmark, results appended to docs/benchmarks.md
# make bench BENCH=recovery ARGS=  one benchmark, printed only
# make test                       what the CI runs (scripts/test)
# make chaos                      the full chaos suite (tests/chaos)
#
# The queue benchmark (SAQ/arq, the `peers` extra) needs its own virtualenv, see docs/benchmarks.md:
#   make bench BENCH=queue PYTHON=<that venv>/bin/python ARGS=
PYTHON ?= .venv/bin/python
BENCH ?= versus concurrency recovery ratelimit pipeline
ARGS ?= --append

.PHONY: bench test chaos

bench:
	$(PYTHON) -m pip install -q -e ".[bench]"
	@for name in $(BENCH); do \
		echo "==> python -m bench $$name $(ARGS)"; \
		$(PYTHON) -m bench $$name $(ARGS) || exit 1; \
	done

test:
	./scripts/test

# the full chaos run (300 chapters, KG_CHAOS_CHAPTERS=N for another size); its result is
# appended to docs/benchmarks.md. The reduced run is part of `make test`.
chaos:
	$(PYTHON) -m pytest tests/chaos -m chaos -p no:cacheprovider -q -s
