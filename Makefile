# The README's commands: `make demo` and `make test`. Each sets itself up.
UV_VERSION := 0.13.9
UV := python3 -m uv

.PHONY: setup demo lint test bench

setup:
	@python3 -m uv --version 2>/dev/null | grep -q "$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --extra dev

demo: setup
	$(UV) run --frozen python -m devkit.demo

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

test: lint
	$(UV) run --frozen pytest

bench: setup
	$(UV) run --frozen python bench/archive_throughput.py
	$(UV) run --frozen python bench/pack_env.py
	$(UV) run --frozen python bench/boot.py
	$(UV) run --frozen python bench/first_job.py
