"""`podenv init NAME`: scaffold a new model (env, pixi feature, plugin, test, deploy file) in a fork."""

import argparse
from pathlib import Path

from podenv.cli_store import Subcommands
from podenv.log import get_logger

_log = get_logger("init")


def run_init(arguments: argparse.Namespace) -> int:
    from podenv.scaffolding import init_model

    written = init_model(Path(arguments.root), arguments.name)
    for relative in written:
        print(relative)
    name = arguments.name
    _log.info(
        f"scaffolded {name}: pin its libraries in pixi.toml [feature.{name}] and run `pixi lock`, "
        f"add its model to envs/{name}.yaml, fill in worker/models/{name}.py; "
        f"its test: pytest tests/unit/test_plugin_{name}.py"
    )
    return 0


def register(commands: Subcommands) -> None:
    init = commands.add_parser(
        "init", help="scaffold a new model: env, pixi feature, plugin with its test, deploy file"
    )
    init.add_argument("name", help="the model's name: an env name and a Python module name")
    init.add_argument("--root", default=".", help="the project's root (default: the current directory)")
    init.set_defaults(run=run_init)
