"""RunPod's REST API v2 as its published OpenAPI document states it, on 127.0.0.1, for tests.

RunPod cannot be reached from here, so the contract is the document itself: every request is
matched to an operation of the document and its body validated against that operation's
request schema, as published (JSON Schema 2020-12 through ``jsonschema``); every answer is
validated against the operation's response schema before it is sent. A request the document
refuses gets the document's problem answer (422 with ``errors`` naming the field, in the
documented ``$.field: reason`` form); an answer the document would refuse is a bug here and
is recorded in ``violations`` (and answered 500), which the tests check is empty.

Beyond the schemas it keeps the rules the operations' descriptions state and podenv relies
on: a template's container settings are copied into an endpoint at create (``templateId``)
and at update (env replaced whole), a non-empty ``allowedCudaVersions`` beside a
``minCudaVersion`` is a 400, a volume never shrinks, an unknown id is a 404. It counts the
endpoint's releases: a change of container settings is a new release (workers roll).
"""

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT202012

_URI = "urn:runpod-rest-v2"
_CONTAINER = ("image", "args", "disk", "ports", "env", "registry")
_OPERATIONS = (  # the operations podenv deploy uses, by the document's operationId
    "listTemplates",
    "createTemplate",
    "getTemplate",
    "updateTemplate",
    "listEndpoints",
    "createEndpoint",
    "getEndpoint",
    "updateEndpoint",
    "listNetworkVolumes",
    "createNetworkVolume",
    "getNetworkVolume",
    "updateNetworkVolume",
)


class Problem(Exception):
    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]


class Contract:
    """The document's schemas and operations, with validation by operation."""

    def __init__(self, document_path: Path) -> None:
        self.document = json.loads(document_path.read_text())
        resource = DRAFT202012.create_resource(self.document)
        self.registry = Registry().with_resource(_URI, resource)
        self.operations = [
            Operation(spec["operationId"], method.upper(), path, self._pattern(path), spec)
            for path, item in self.document["paths"].items()
            for method, spec in item.items()
            if method in ("get", "post", "patch", "put", "delete")
        ]

    @staticmethod
    def _pattern(template: str) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$")

    def find(self, method: str, path: str) -> tuple[Operation, list[str]] | None:
        for operation in self.operations:
            match = operation.pattern.match(path)
            if match and operation.method == method:
                return operation, list(match.groups())
        return None

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.registry.resolver(_URI).lookup(node["$ref"]).contents
        return node

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"{_URI}{schema['$ref']}"} if "$ref" in schema else schema, registry=self.registry
        )
        # The field that is wrong first: an unevaluatedProperties error only echoes a failed
        # sibling (properties count as evaluated only where their subschema passed).
        found = sorted(
            validator.iter_errors(instance),
            key=lambda error: (error.validator == "unevaluatedProperties", -len(error.path), error.json_path),
        )
        return [f"{error.json_path}: {error.message}" for error in found]

    def request_errors(self, operation: Operation, body: Any) -> list[str]:
        request = operation.spec.get("requestBody")
        if request is None:
            return []
        return self.errors(request["content"]["application/json"]["schema"], body)

    def response_schema(self, operation: Operation, status: int) -> dict[str, Any]:
        responses = operation.spec["responses"]
        answer = self._resolve(responses.get(str(status)) or responses["default"])
        (content,) = answer["content"].values()
        return content["schema"]


@dataclass
class RunPodState:
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    releases: dict[str, int] = field(default_factory=dict)


def _new_id() -> str:
    return secrets.token_hex(5)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeRunPod:
    """The operations podenv uses, over in-memory state, refusing what the document refuses."""

    def __init__(self, contract: Contract, api_key: str) -> None:
        self.contract = contract
        self.api_key = api_key
        self.state = RunPodState()
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()

    # Templates

    def listTemplates(self, body: Any) -> tuple[int, Any]:
        return 200, {"templates": list(self.state.templates.values())}

    def getTemplate(self, body: Any, template_id: str) -> tuple[int, Any]:
        return 200, self._template(template_id)

    def _template(self, template_id: str) -> dict[str, Any]:
        if template_id not in self.state.templates:
            raise Problem(404, "template not found")
        return self.state.templates[template_id]

    def createTemplate(self, body: dict[str, Any]) -> tuple[int, Any]:
        template = {
            "id": _new_id(),
            "args": "",
            "disk": 20,
            "mounts": {},
            "ports": [],
            "env": {},
            "registry": None,
            "serverless": False,
            "public": False,
            "category": "NVIDIA",
            "startSsh": True,
            "startJupyter": True,
            "allowedCudaVersions": [],
            **body,
        }
        self.state.templates[template["id"]] = template
        return 201, template

    def updateTemplate(self, body: dict[str, Any], template_id: str) -> tuple[int, Any]:
        template = self._template(template_id)
        template.update(body)
        return 200, template

    # Serverless endpoints

    def listEndpoints(self, body: Any) -> tuple[int, Any]:
        return 200, {"endpoints": list(self.state.endpoints.values())}

    def _endpoint(self, endpoint_id: str) -> dict[str, Any]:
        if endpoint_id not in self.state.endpoints:
            raise Problem(404, "endpoint not found")
        return self.state.endpoints[endpoint_id]

    def getEndpoint(self, body: Any, endpoint_id: str) -> tuple[int, Any]:
        return 200, self._endpoint(endpoint_id)

    def _serverless_template(self, template_id: str) -> dict[str, Any]:
        template = self._template(template_id)
        if not template["serverless"]:
            raise Problem(422, f"template {template_id} is not a serverless template")
        return template

    @staticmethod
    def _check_cuda(gpu: dict[str, Any]) -> None:
        if gpu.get("allowedCudaVersions") and gpu.get("minCudaVersion"):
            raise Problem(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are mutually exclusive")

    def _check_volumes(self, body: dict[str, Any]) -> None:
        for volume_id in body.get("networkVolumes", []):
            if volume_id not in self.state.volumes:
                raise Problem(400, f"networkVolumes: network volume {volume_id} does not exist")

    def createEndpoint(self, body: dict[str, Any]) -> tuple[int, Any]:
        if ("gpu" in body) == ("cpu" in body):
            raise Problem(400, "specify exactly one of gpu or cpu")
        self._check_cuda(body["gpu"])
        self._check_volumes(body)
        container: dict[str, Any] = {"args": "", "disk": 20, "ports": [], "env": {}, "registry": None}
        if "templateId" in body:
            template = self._serverless_template(body["templateId"])
            container.update({key: template[key] for key in _CONTAINER if key in template})
        fields = {key: value for key, value in body.items() if key not in ("templateId", "gpu", "workers")}
        env = {**container["env"], **body.get("env", {})}
        endpoint = {
            "id": _new_id(),
            **container,
            "gpu": {"count": 1, "allowedCudaVersions": [], "minCudaVersion": None, **body["gpu"]},
            "workers": {"min": 0, "max": 3, "idleTimeout": 10, **body.get("workers", {})},
            "dataCenterIds": [],
            "networkVolumes": [],
            "timeout": 300000,
            "flashboot": "OFF",
            "createdAt": _now(),
            **fields,
            "env": env,
        }
        self.state.endpoints[endpoint["id"]] = endpoint
        self.state.releases[endpoint["id"]] = 1
        return 201, endpoint

    def updateEndpoint(self, body: dict[str, Any], endpoint_id: str) -> tuple[int, Any]:
        endpoint = self._endpoint(endpoint_id)
        before = {key: endpoint.get(key) for key in _CONTAINER}
        changes = dict(body)
        if "templateId" in changes:
            template = self._serverless_template(changes.pop("templateId"))
            settings = {key: template[key] for key in _CONTAINER if key in template}
            settings["env"] = {**template["env"], **changes.pop("env", {})}
            changes = {**settings, **changes}
        if "gpu" in changes:
            gpu = {**endpoint["gpu"], **changes.pop("gpu")}
            if gpu.get("minCudaVersion") == "":
                gpu["minCudaVersion"] = None
            if "pools" in body["gpu"] and "excludedTypes" not in body["gpu"]:
                gpu.pop("excludedTypes", None)
            self._check_cuda(gpu)
            endpoint["gpu"] = gpu
        if "workers" in changes:
            endpoint["workers"] = {**endpoint["workers"], **changes.pop("workers")}
        self._check_volumes(changes)
        endpoint.update(changes)
        if {key: endpoint.get(key) for key in _CONTAINER} != before:
            self.state.releases[endpoint_id] += 1
        return 200, endpoint

    # Network volumes

    def listNetworkVolumes(self, body: Any) -> tuple[int, Any]:
        return 200, {"networkVolumes": list(self.state.volumes.values())}

    def _volume(self, volume_id: str) -> dict[str, Any]:
        if volume_id not in self.state.volumes:
            raise Problem(404, "network volume not found")
        return self.state.volumes[volume_id]

    def getNetworkVolume(self, body: Any, volume_id: str) -> tuple[int, Any]:
        return 200, self._volume(volume_id)

    def createNetworkVolume(self, body: dict[str, Any]) -> tuple[int, Any]:
        volume = {"id": _new_id(), "type": "STANDARD", **body}
        self.state.volumes[volume["id"]] = volume
        return 201, volume

    def updateNetworkVolume(self, body: dict[str, Any], volume_id: str) -> tuple[int, Any]:
        volume = self._volume(volume_id)
        if body.get("size", volume["size"]) < volume["size"]:
            raise Problem(400, "size: network volume storage cannot be reduced")
        volume.update(body)
        return 200, volume

    # One request

    def handle(self, method: str, path: str, authorization: str | None, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body})
            found = self.contract.find(method, path)
            if found is None:
                return self._problem(None, Problem(404, f"no operation {method} {path} in the document"))
            operation, parameters = found
            try:
                if authorization != f"Bearer {self.api_key}":
                    raise Problem(401, "missing bearer token" if not authorization else "invalid API key")
                errors = self.contract.request_errors(operation, body)
                if errors:
                    raise Problem(422, "Request validation failed.", errors)
                if operation.operation_id not in _OPERATIONS:
                    raise Problem(405, f"{operation.operation_id} is not served by this stand-in")
                status, answer = getattr(self, operation.operation_id)(body, *parameters)
            except Problem as problem:
                return self._problem(operation, problem)
            return self._checked(operation, status, answer)

    def _problem(self, operation: Operation | None, problem: Problem) -> tuple[int, Any]:
        answer: dict[str, Any] = {
            "title": HTTPStatus(problem.status).phrase,
            "status": problem.status,
            "detail": problem.detail,
        }
        if problem.errors:
            answer["errors"] = problem.errors
        return (
            (problem.status, answer)
            if operation is None
            else self._checked(operation, problem.status, answer)
        )

    def _checked(self, operation: Operation, status: int, answer: Any) -> tuple[int, Any]:
        errors = self.contract.errors(self.contract.response_schema(operation, status), answer)
        if errors:
            self.violations.append(f"{operation.operation_id} {status}: {errors[0]}")
            return 500, {"title": "Internal Server Error", "status": 500, "detail": errors[0]}
        return status, json.loads(json.dumps(answer))


class _Handler(BaseHTTPRequestHandler):
    server: "ContractServer"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        path = self.path.split("?", 1)[0]
        status, answer = self.server.api.handle(self.command, path, self.headers.get("Authorization"), body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        kind = "application/json" if status < 400 else "application/problem+json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # tests read .requests instead
        pass


class ContractServer(ThreadingHTTPServer):
    """``with ContractServer(document, key) as server: server.url``: serves on a free loopback port."""

    def __init__(self, document_path: Path, api_key: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = FakeRunPod(Contract(document_path), api_key)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "ContractServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
