import hashlib
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


# Source files (the checkout's own: the lock, the env YAMLs, worker/, local model files) are
# read by path and tracked by content, as params: a change re-runs the rule (Snakemake's params
# trigger). They are not inputs because on a cluster (docs/build-cluster.md) every input is an
# object under the storage prefix, while sources travel with the workflow's sources
# (--job-deploy-sources); marking them local() would pin the jobs to the submitting machine.
def source_digest(paths):
    """sha256 over the names and bytes of source files. A file a rule of this run will
    write (pixi.lock before the lock rule) counts as missing: the job runs anyway, since
    its input is new."""
    digest = hashlib.sha256()
    for path in sorted(str(path) for path in paths):
        content = Path(path).read_bytes() if Path(path).exists() else b"\0missing"
        for part in (path.encode(), content):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def lock_if_missing(wildcards):
    """pixi.lock as an input only when the lock rule must write it (on this machine)."""
    lock = config["lockfile"]
    return [] if Path(lock).exists() else [lock]


def lock_digest(wildcards):
    return source_digest([config["lockfile"]])


def lock_and_spec_digest(wildcards):
    return source_digest([config["lockfile"], spec_path_of(wildcards)])


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


def model_sources_digest(wildcards):
    return source_digest(local_model_files(wildcards))


def model_layer_infos_of(name):
    return [
        f"{BUILD}/{name}/models/{model.name}.json" for model in env_spec(name).models
    ]


def code_digest(wildcards):
    """The worker package's files that go into the code layer (a change re-packs it)."""
    from podenv.codelayer import code_files

    return source_digest(code_files(Path(config["code_dir"])))


def layer_archives(wildcards):
    """Each layer's archive, beside its record: publish reads both, so both are its inputs
    (the env's shards: rules/publish.smk's bundle)."""
    models = [
        f"{BUILD}/{wildcards.name}/models/{m.name}.tar.zst"
        for m in env_spec(wildcards.name).models
    ]
    return [
        f"{BUILD}/{wildcards.name}/code.tar.zst",
        *models,
    ]


def layer_infos(wildcards):
    return [
        f"{BUILD}/{wildcards.name}/env.json",
        f"{BUILD}/{wildcards.name}/code.json",
        *model_layer_infos_of(wildcards.name),
    ]


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
