import json
from pathlib import Path

from podenv.buildconfig import check_build_config
from podenv.envspec import load_env_spec
from podenv.errors import PodenvError

try:
    check_build_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
except PodenvError as error:
    raise SystemExit(f"podenv: error: {error}") from None

# Rules run `python` from the active environment (the build venv, or the rule's conda
# env under --use-conda) with this checkout's podenv package.
PODENV = f"PYTHONPATH={workflow.basedir} python -m podenv.cli"
BUILD_TOOLS = "conda/podenv-build.yaml"
BUILD = config["build_dir"]
CACHE = config["cache_dir"]
ENVS_DIR = Path(config["envs_dir"])


wildcard_constraints:
    name="[a-z0-9][a-z0-9_-]*",
    model="[A-Za-z0-9][A-Za-z0-9._-]*",


def selected_envs():
    """The envs to build: config env=a,b or every envs/<name>.yaml."""
    if config["env"]:
        return config["env"].split(",")
    return sorted(path.stem for path in ENVS_DIR.glob("*.yaml"))


def env_spec_path(name):
    return ENVS_DIR / f"{name}.yaml"


def env_spec(name):
    return load_env_spec(env_spec_path(name))


def spec_path_of(wildcards):
    return str(env_spec_path(wildcards.name))


def env_install_settings(wildcards):
    """What the env install depends on besides the lock (a change re-runs the install)."""
    spec = env_spec(wildcards.name)
    return json.dumps(
        [spec.pixi_environment, spec.platform, sorted(spec.allow_unhashed)]
    )


def model_settings(wildcards):
    """The model's entry in the env YAML (a change rebuilds only this model's layer)."""
    return json.dumps(
        env_spec(wildcards.name).model(wildcards.model).document, sort_keys=True
    )


def local_model_files(wildcards):
    model = env_spec(wildcards.name).model(wildcards.model)
    if model.source != "local":
        return []
    root = Path(model.document["path"])
    return sorted(str(path) for path in root.rglob("*") if path.is_file())


def model_layer_infos_of(name):
    return [
        f"{BUILD}/{name}/models/{model.name}.json" for model in env_spec(name).models
    ]


def layer_infos(wildcards):
    return [f"{BUILD}/{wildcards.name}/env.json", *model_layer_infos_of(wildcards.name)]


def release_version(wildcards):
    return config["version"] or env_spec(wildcards.name).version


def store_url():
    """The configured store; a relative file:// path is taken from the working directory."""
    store = config["store"]
    if store.startswith("file://") and not store.startswith("file:///"):
        root = Path(store.removeprefix("file://")).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return f"file://{root}"
    return store
