# Two commands do all set-up on a fresh machine: `make demo` and `make test` (see README.md).
.PHONY: setup demo test test-all lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/python scripts/demo.py

test: setup
	.venv/bin/python -m pytest -q

test-all: setup
	.venv/bin/python -m pytest -q -m "not gpu"

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python scripts/bench_engine.py
