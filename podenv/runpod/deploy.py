"""`podenv deploy`: make RunPod's network volumes, template and serverless endpoint match a
deploy file and a release, creating or updating each, found by name, and touching nothing
that already matches (a re-run sends no write).

The release is pinned on the endpoint (PODENV_VERSION and PODENV_DIGEST): deploying a release
or rolling back is an endpoint update, which RunPod rolls out as workers are replaced, and a
FlashBoot-revived worker keeps serving the release it was pinned to. Channels stay for
building, canaries and people.

Order: volumes (the endpoint names their ids), then the template (the endpoint's container
settings come from it by ``templateId``), then the endpoint.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podenv import settings
from podenv.deployfile import DeploySpec, VolumeSpec
from podenv.errors import DeployError
from podenv.log import get_logger
from podenv.manifest import Manifest
from podenv.runpod.api import Call, RunPodAPI
from podenv.runpod.sizing import Sizes, sizes_for

_log = get_logger("deploy")
# The settings of a container that RunPod copies from a template (and rolls workers for).
CONTAINER_FIELDS = ("image", "args", "disk", "ports", "env", "registry")
_FLASHBOOT = {"off": "OFF", "on": "FLASHBOOT", "priority": "PRIORITY_FLASHBOOT"}


def secret_reference(name: str) -> str:
    return f"{{{{ RUNPOD_SECRET_{name} }}}}"


# What RunPod should hold


def worker_environment(spec: DeploySpec, manifest: Manifest, sizes: Sizes) -> dict[str, str]:
    """The worker's variables: the pinned release, podenv's settings and secret references."""
    env = {
        settings.STORE.name: spec["store"],
        settings.ENV.name: spec.env,
        settings.VERSION.name: manifest.version,
        settings.DIGEST.name: manifest.digest,
        settings.ROOT.name: settings.ROOT.default,
        "HF_HUB_OFFLINE": "1",
        "RUNPOD_INIT_TIMEOUT": str(spec.get("init_timeout") or sizes.init_timeout_s),
    }
    # Always explicit: the worker's own default depends on RunPod's variables (ADR 0013).
    env[settings.PLACEMENT.name] = spec["placement"]
    if not spec.volumes:
        env[settings.ALLOW_NO_VOLUME.name] = "1"
    env.update(spec["variables"])
    env.update({variable: secret_reference(name) for variable, name in spec["secrets"].items()})
    output = spec.get("output")
    if output:
        env[settings.OUTPUT_BUCKET.name] = output["bucket"]
        env.update({variable: secret_reference(name) for variable, name in output["secrets"].items()})
    return dict(sorted(env.items()))


def template_body(spec: DeploySpec, image: str, env: dict[str, str], sizes: Sizes) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": spec.endpoint,
        "image": image,
        "args": "",  # the image's entrypoint is worker/start.sh
        "disk": spec.get("container_disk_gb") or sizes.container_disk_gb,
        "ports": [],
        "env": env,
        "serverless": True,
        "startSsh": False,
        "startJupyter": False,
    }
    if spec.get("registry"):
        body["registry"] = spec["registry"]
    return body


def endpoint_settings(spec: DeploySpec, volume_ids: list[str], sizes: Sizes) -> dict[str, Any]:
    """Everything of the endpoint but its container (that comes from the template)."""
    gpu: dict[str, Any] = {"pools": spec["gpu"]["pools"], "count": spec["gpu"]["count"]}
    # An explicit [] states "no exact set", which may accompany a floor (and clears an old set).
    gpu["allowedCudaVersions"] = []
    if sizes.min_cuda:
        gpu["minCudaVersion"] = sizes.min_cuda
    workers = spec["workers"]
    return {
        "gpu": gpu,
        "workers": {"min": workers["min"], "max": workers["max"], "idleTimeout": workers["idle_timeout"]},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": spec["queue_delay"]},
        "dataCenterIds": [volume.datacenter for volume in spec.volumes],
        "networkVolumes": volume_ids,
        "timeout": spec["request_timeout"] * 1000,
        "flashboot": _FLASHBOOT[spec["flashboot"]],
    }


# Comparing with what RunPod holds


def _same(key: str, want: Any, have: Any) -> bool:
    if key in ("dataCenterIds", "networkVolumes"):
        return sorted(want) == sorted(have or [])
    if key == "gpu":
        have = have or {}
        return (
            sorted(want["pools"]) == sorted(have.get("pools") or [])
            and want["count"] == have.get("count", 1)
            and not have.get("allowedCudaVersions")
            and not have.get("excludedTypes")
            and want.get("minCudaVersion") == (have.get("minCudaVersion") or None)
        )
    if key == "registry":
        return (want or None) == (have or None)
    return want == have


def changed_fields(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    return [key for key, value in want.items() if not _same(key, value, have.get(key))]


def _gpu_update(gpu: dict[str, Any]) -> dict[str, Any]:
    """A PATCH's gpu block: a floor to clear is cleared with "" (omitting it keeps the old one)."""
    return gpu if "minCudaVersion" in gpu else {**gpu, "minCudaVersion": ""}


# Talking to RunPod, or recording what would be said


@dataclass
class Session:
    """Reads go to RunPod when there is a key; writes go to RunPod, or only into ``calls``."""

    api: RunPodAPI | None
    dry_run: bool
    calls: list[Call] = field(default_factory=list)

    def read(self, path: str) -> Any:
        return None if self.api is None else self.api.call("GET", path)

    def write(self, method: str, path: str, body: dict[str, Any], why: str, new_id: str) -> dict[str, Any]:
        call = Call(method, path, body, why)
        self.calls.append(call)
        if self.dry_run or self.api is None:
            _log.info(f"would {why}")
            return {"id": new_id, **body}
        call.response = self.api.call(method, path, body)
        _log.info(why)
        return call.response

    def listed(self, path: str, key: str) -> list[dict[str, Any]]:
        answer = self.read(path)
        return [] if answer is None else list(answer[key])


def _one_named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any] | None:
    found = [item for item in items if item.get("name") == name]
    if len(found) > 1:
        ids = ", ".join(str(item.get("id")) for item in found)
        raise DeployError(
            f"{len(found)} RunPod {what}s are named {name} ({ids}); rename or delete all but one."
        )
    return found[0] if found else None


def _existing_volume(
    session: Session, volume: VolumeSpec, named: dict[str, Any] | None
) -> dict[str, Any] | None:
    if volume.id is None:
        return named
    found = session.read(f"/v2/network-volumes/{volume.id}")
    if found is not None and found["dataCenter"] != volume.datacenter:
        raise DeployError(
            f"network volume {volume.id} is in {found['dataCenter']}, not {volume.datacenter}; "
            "a volume serves workers in its own datacenter only."
        )
    return found


def ensure_volume(
    session: Session,
    spec: DeploySpec,
    volume: VolumeSpec,
    sizes: Sizes,
    listed: Callable[[], list[dict[str, Any]]],
) -> str:
    """The id of the datacenter's volume, created or grown to the size the release needs."""
    name = f"{spec.endpoint}-{volume.datacenter.lower()}"
    size = volume.size_gb or sizes.volume_gb
    named = None
    if volume.id is None:
        in_datacenter = [item for item in listed() if item["dataCenter"] == volume.datacenter]
        named = _one_named(in_datacenter, name, "network volume")
    found = _existing_volume(session, volume, named)
    if found is None and volume.id is not None:
        return volume.id  # dry run without a key: nothing to compare with
    if found is None:
        body = {"name": name, "size": size, "dataCenter": volume.datacenter}
        why = f"create network volume {name} ({size} GB) in {volume.datacenter}"
        return session.write("POST", "/v2/network-volumes", body, why, f"<new volume {name}>")["id"]
    if found["size"] < size:
        why = f"grow network volume {found['id']} in {volume.datacenter} from {found['size']} to {size} GB"
        session.write("PATCH", f"/v2/network-volumes/{found['id']}", {"size": size}, why, found["id"])
    return found["id"]


def ensure_template(session: Session, body: dict[str, Any]) -> tuple[str, list[str]]:
    """The template's id, and the fields this run changed (created: every field)."""
    name = body["name"]
    found = _one_named(session.listed("/v2/templates", "templates"), name, "template")
    if found is None:
        created = session.write(
            "POST", "/v2/templates", body, f"create template {name}", f"<new template {name}>"
        )
        return created["id"], sorted(body)
    changes = changed_fields(body, found)
    if changes:
        patch = {key: body[key] for key in changes}
        why = f"update template {name}: {', '.join(changes)}"
        session.write("PATCH", f"/v2/templates/{found['id']}", patch, why, found["id"])
    return found["id"], changes


@dataclass(frozen=True)
class EndpointResult:
    id: str
    created: bool
    changes: list[str]

    @property
    def rolls_workers(self) -> bool:
        return not self.created and any(key in CONTAINER_FIELDS for key in self.changes)


def ensure_endpoint(
    session: Session, name: str, template_id: str, container: dict[str, Any], settings: dict[str, Any]
) -> EndpointResult:
    found = _one_named(session.listed("/v2/serverless", "endpoints"), name, "endpoint")
    if found is None:
        body = {"name": name, "type": "QUEUE", "templateId": template_id, **settings}
        created = session.write(
            "POST", "/v2/serverless", body, f"create endpoint {name}", f"<new endpoint {name}>"
        )
        return EndpointResult(created["id"], True, sorted(body))
    container_changes = changed_fields(container, found)
    changes = changed_fields(settings, found)
    patch = {key: settings[key] for key in changes}
    if "gpu" in patch:
        patch["gpu"] = _gpu_update(patch["gpu"])
    if container_changes:
        # One-time application of the template's container settings, env replaced whole.
        patch["templateId"] = template_id
    if patch:
        what = ", ".join([*container_changes, *changes])
        session.write(
            "PATCH", f"/v2/serverless/{found['id']}", patch, f"update endpoint {name}: {what}", found["id"]
        )
    return EndpointResult(found["id"], False, [*container_changes, *changes])


@dataclass(frozen=True)
class DeployResult:
    endpoint: EndpointResult
    template_id: str
    template_changes: list[str]
    volume_ids: list[str]
    sizes: Sizes
    calls: list[Call]


def deploy(
    spec: DeploySpec,
    manifest: Manifest,
    image: str,
    session: Session,
    before_endpoint: Callable[[list[tuple[str, str]]], None] | None = None,
) -> DeployResult:
    """``before_endpoint`` gets (datacenter, volume id) pairs once the volumes exist: `--warm`
    fills them before the endpoint moves to the release."""
    if manifest.name != spec.env:
        raise DeployError(f"{spec.path} deploys env {spec.env}, but the release is of {manifest.name}.")
    sizes = sizes_for(manifest, spec["placement"], has_volume=bool(spec.volumes))
    volume_list: list[dict[str, Any]] | None = None

    def listed() -> list[dict[str, Any]]:
        nonlocal volume_list
        if volume_list is None:
            volume_list = session.listed("/v2/network-volumes", "networkVolumes")
        return volume_list

    volume_ids = [ensure_volume(session, spec, volume, sizes, listed) for volume in spec.volumes]
    if before_endpoint is not None:
        before_endpoint(
            [(volume.datacenter, id_) for volume, id_ in zip(spec.volumes, volume_ids, strict=True)]
        )
    env = worker_environment(spec, manifest, sizes)
    template = template_body(spec, image, env, sizes)
    template_id, template_changes = ensure_template(session, template)
    container = {key: template[key] for key in CONTAINER_FIELDS if key in template}
    settings = endpoint_settings(spec, volume_ids, sizes)
    endpoint = ensure_endpoint(session, spec.endpoint, template_id, container, settings)
    return DeployResult(endpoint, template_id, template_changes, volume_ids, sizes, session.calls)
