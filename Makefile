# The README's commands: `make demo` and `make test`. Each sets itself up.
UV_VERSION := 0.13.9
UV := python3 -m uv
APT_FUSE3 := DEBIAN_FRONTEND=noninteractive sh -c 'apt-get install -y -q fuse3 || { apt-get update -q && apt-get install -y -q fuse3; }'

.PHONY: setup demo lint test bench bench-real

setup:
	@# libfuse3 for the simulated network volume (devkit/netvolume.py); as root, once.
	@ldconfig -p | grep -q libfuse3.so.3 || { [ "$$(id -u)" = 0 ] && $(APT_FUSE3) >/dev/null; } \
		|| echo "setup: libfuse3 is missing and this is not root: the network-volume tests will say so"
	@python3 -m uv --version 2>/dev/null | grep -q "$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --extra dev

demo: setup
	$(UV) run --frozen python -m devkit.demo

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen snakefmt --check .
	$(UV) run --frozen snakemake --lint --quiet

test: lint
	$(UV) run --frozen pytest

bench: setup
	$(UV) run --frozen python bench/archive_throughput.py
	$(UV) run --frozen python bench/pack_env.py
	$(UV) run --frozen python bench/boot.py
	$(UV) run --frozen python bench/shard_install.py
	$(UV) run --frozen python bench/first_job.py
	$(UV) run --frozen python bench/volume_directories.py

# Real scale (the speech env, ~9 GB unpacked, ~4 GB of downloads the first time); not in CI.
bench-real: setup
	$(UV) run --frozen python bench/real_scale.py
