"""The pipeline's configuration (config/config.yaml, --config, --configfile), checked in one line.

Snakemake reads ``--config key=value`` as YAML: an empty value becomes None and ``2026.10``
the number 2026.1. Empty means "not set" here (the config file's default); a number is
refused, since its digits may already be lost; a bad value is named with its field, not
dumped with the whole schema.
"""

from pathlib import Path
from typing import Any

from podenv.errors import PodenvError

TEXT_KEYS = ("env", "version", "channel", "store")


class BuildConfigError(PodenvError):
    """The pipeline's configuration is not usable."""


def check_build_config(config: dict[str, Any], schema_path: Path) -> None:
    """Normalize ``config`` in place (None -> ""), then validate it against the schema."""
    import jsonschema
    import yaml

    for key in TEXT_KEYS:
        value = config.get(key)
        if value is None:
            config[key] = ""
        elif not isinstance(value, str):
            raise BuildConfigError(
                f"config {key}={value!r} was read as a {type(value).__name__}, and it must be text: "
                f"quote it (--config {key}='\"VALUE\"') or pass it in a --configfile as a string."
            )
    schema = yaml.safe_load(schema_path.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        where = error.json_path.removeprefix("$.") if error.path else "config"
        raise BuildConfigError(f"config {where} is invalid: {error.message}.")
