"""A complete, small podenv project that builds offline: the pipeline tests and the local
demo both start from it.

It holds a local conda channel (a relocatable CPython and a ``greeting`` module package),
a pixi.lock in pixi's format written with py-rattler that pins them plus one real PyPI
wheel with its hash, ``envs/demo.yaml`` with one local model, and the pipeline's config.
"""

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from rattler import LockChannel, LockFile, LockPlatform

from devkit.localchannel import (
    build_channel,
    locked_records,
    module_package_spec,
    relocatable_python_spec,
)

PIXI_ENVIRONMENT = "worker"
PLATFORM = "linux-64"


@dataclass(frozen=True)
class PypiWheel:
    name: str
    version: str
    url: str
    sha256: str


SIX = PypiWheel(
    "six",
    "1.17.0",
    "https://files.pythonhosted.org/packages/b7/ce/149a00dd41f10bc29e5921b496af8b574d8413afcd5e30dfa0ed46c2cc5e/six-1.17.0-py2.py3-none-any.whl",
    "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",
)

# A wheel with a console script (bin/idna): its shebang holds the build prefix, and its RECORD
# that script's hash, which must not make the package's shard depend on where it was built.
IDNA = PypiWheel(
    "idna",
    "3.20",
    "https://files.pythonhosted.org/packages/58/a2/bb081bab032533a855d44de1d56f8e8426114ff1ba5d1f07a438a0a654f8/idna-3.20-py3-none-any.whl",
    "ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c",
)

# A wheel with a `scripts=` file (bin/jp.py): its shebang holds the build prefix, and its
# byte-code was compiled from that text.
JMESPATH = PypiWheel(
    "jmespath",
    "1.1.0",
    "https://files.pythonhosted.org/packages/14/2f/967ba146e6d58cf6a652da73885f52fc68001525b4197effc174321d70b4/jmespath-1.1.0-py3-none-any.whl",
    "a5663118de4908c91729bea0acadca56526eb2698e83de10cd116ae0f4e97c64",
)


def worker_wheels() -> list[PypiWheel]:
    """The runpod SDK and its dependencies, pinned by ``scripts/pin_demo_wheels.py``."""
    document = json.loads(resources.files("devkit.data").joinpath("demo-worker-wheels.json").read_text())
    return [PypiWheel(**wheel) for wheel in document["wheels"]]


def greeting_source(version: str) -> str:
    return (
        f'VERSION = "{version}"\n\n\n'
        "def hello(name: str) -> str:\n"
        f'    return f"hello {{name}} from greeting {version}"\n'
    )


def write_lock(
    path: Path, environment: str, channel: str, channel_dir: Path, names: list[str], wheels: list[PypiWheel]
) -> None:
    """A pixi.lock written by py-rattler; PyPI hashes are added after, as pixi writes them."""
    lock = LockFile([LockPlatform(PLATFORM)])
    lock.set_channels(environment, [LockChannel(channel)])
    for record in locked_records(channel_dir, names):
        lock.add_conda_package(environment, LockPlatform(PLATFORM), record)
    for wheel in wheels:
        lock.add_pypi_package(environment, LockPlatform(PLATFORM), wheel.name, wheel.version, wheel.url)
    lock.to_path(path)
    # py-rattler's API takes no PyPI hash; pixi records it as `sha256:` on the package entry.
    document = yaml.safe_load(path.read_text())
    hashes = {wheel.url: wheel.sha256 for wheel in wheels}
    for package in document["packages"]:
        if package.get("pypi") in hashes:
            package["sha256"] = hashes[package["pypi"]]
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def write_model(directory: Path, revision: str) -> None:
    """A tiny model in the files a hub snapshot would hold."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "demo", "revision": revision}) + "\n")
    (directory / "weights.bin").write_bytes(revision.encode() * 1024)


def write_env_spec(path: Path, version: str, model_revision: str) -> None:
    spec = {
        "name": path.stem,
        "version": version,
        "description": "offline demo: relocatable CPython, a conda module, a PyPI wheel, one model",
        "pixi_environment": PIXI_ENVIRONMENT,
        "handler": "worker.handler",
        "models": [
            {
                "name": "demo-model",
                "source": "local",
                "id": "podenv/demo-model",
                "revision": model_revision,
                "path": "models/demo-model",
                "target": "hf-hub",
                "plugin": "demo",
            }
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def write_config(project: Path, repository: Path, store: str) -> None:
    config = yaml.safe_load((repository / "config" / "config.yaml").read_text())
    config["store"] = store
    (project / "config").mkdir(parents=True, exist_ok=True)
    (project / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def write_lock_for(project: Path, channel_dir: Path, greeting_version: str, wheels: list[PypiWheel]) -> None:
    """``project``'s pixi.lock: CPython and ``greeting`` from the local channel, plus ``wheels``."""
    names = ["python", f"greeting =={greeting_version}"]
    write_lock(project / "pixi.lock", PIXI_ENVIRONMENT, f"file://{channel_dir}", channel_dir, names, wheels)


def build_channel_dir(channel_dir: Path, greeting_versions: tuple[str, ...] = ("1.0",)) -> str:
    specs = [relocatable_python_spec()]
    specs += [module_package_spec("greeting", v, greeting_source(v)) for v in greeting_versions]
    return build_channel(channel_dir, specs)


def create_project(
    project: Path,
    repository: Path,
    store: str,
    channel_dir: Path,
    greeting_version: str = "1.0",
    wheels: list[PypiWheel] | None = None,
) -> Path:
    """Write the demo project into ``project`` (channel already built at ``channel_dir``).

    ``wheels`` are the env's PyPI packages: by default only ``six``, which keeps pipeline tests
    small; an env that runs the worker handler takes :func:`worker_wheels`.
    """
    project.mkdir(parents=True, exist_ok=True)
    write_lock_for(project, channel_dir, greeting_version, wheels or [SIX])
    write_model(project / "models" / "demo-model", "r1")
    write_env_spec(project / "envs" / "demo.yaml", "1.0.0", "r1")
    write_config(project, repository, store)
    write_worker(project, repository)
    return project


def write_worker(project: Path, repository: Path) -> None:
    """The project's handler and plugins (its code layer): the repository's worker package."""
    shutil.copytree(
        repository / "worker",
        project / "worker",
        ignore=shutil.ignore_patterns("__pycache__"),
        dirs_exist_ok=True,
    )
