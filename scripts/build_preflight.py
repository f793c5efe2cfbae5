"""The build workflow's first step, before anything is installed or built (standard library only):

- the `store` environment's secrets are there (GitHub creates a missing environment empty);
- the build goes where the disk is: the candidate directory with the most free space, which
  must hold REQUIRED_GB (a real env needs ~25 GB; a hosted runner guarantees ~14 GB on / and
  has more on /mnt);
- the pipeline's config is written as JSON for `snakemake --configfile`: every value a string
  (`--config version=2026.10` would become the number 2026.1), an empty input left out so the
  config file's default holds.

    python3 scripts/build_preflight.py --output config.json --required-gb 25 DIR [DIR ...]

Inputs and secrets arrive as environment variables (ENV_NAME, VERSION, CHANNEL, PODENV_STORE,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Each refusal is one line on stderr and exit 1; no
secret's value is ever printed. Writes build_dir=DIR to $GITHUB_OUTPUT when set.
"""

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

REQUIRED_SECRETS = ("PODENV_STORE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
STORE_PATTERN = re.compile(r"^s3://[^/]+")
INPUTS = {"env": "ENV_NAME", "version": "VERSION", "channel": "CHANNEL"}
GB = 10**9


class Refusal(Exception):
    pass


def check_secrets(environ: dict[str, str]) -> None:
    missing = [name for name in REQUIRED_SECRETS if not environ.get(name)]
    if missing:
        raise Refusal(
            f"the GitHub environment `store` lacks the secret(s) {', '.join(missing)}: add them under "
            "Settings > Environments > store (a missing environment is created empty)."
        )
    if not STORE_PATTERN.match(environ["PODENV_STORE"]):
        raise Refusal("the secret PODENV_STORE must be s3://BUCKET/PREFIX.")


def pick_build_dir(candidates: list[Path], required_gb: float) -> tuple[Path, int]:
    """The candidate with the most free bytes; refused if even that one is too small."""
    usable = []
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            usable.append((shutil.disk_usage(candidate).free, candidate))
        except OSError:
            continue
    if not usable:
        raise Refusal(f"none of {', '.join(map(str, candidates))} can be created for the build.")
    free, best = max(usable)
    if free < required_gb * GB:
        raise Refusal(
            f"{best} has {free / GB:.1f} GB free, the most of {len(candidates)} candidate(s), and a build "
            f"needs {required_gb:g} GB: pick a larger runner (the `runner` input)."
        )
    return best, free


def build_config(environ: dict[str, str], build_dir: Path) -> dict[str, str]:
    config = {"store": environ["PODENV_STORE"], "build_dir": str(build_dir / "build")}
    config["cache_dir"] = str(build_dir / "cache")
    for key, variable in INPUTS.items():
        value = environ.get(variable, "").strip()
        if value:
            config[key] = value
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", type=Path, help="directories the build may use")
    parser.add_argument("--output", type=Path, required=True, help="the --configfile to write (JSON)")
    parser.add_argument("--required-gb", type=float, default=25.0)
    arguments = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        check_secrets(environ)
        build_dir, free = pick_build_dir(arguments.candidates, arguments.required_gb)
    except Refusal as refusal:
        print(f"preflight: {refusal}", file=sys.stderr)
        return 1
    config = build_config(environ, build_dir)
    arguments.output.write_text(json.dumps(config, indent=1) + "\n")
    if environ.get("GITHUB_OUTPUT"):
        with open(environ["GITHUB_OUTPUT"], "a") as output:
            output.write(f"build_dir={build_dir}\n")
    shown = {key: value for key, value in config.items() if key != "store"}
    print(f"preflight: secrets present; building in {build_dir} ({free / GB:.1f} GB free); config {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
