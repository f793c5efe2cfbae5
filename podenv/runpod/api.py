"""A small client for RunPod's REST API v2 (JSON over HTTPS, bearer key), on the standard
library: `podenv deploy` makes a handful of requests, not worth a dependency.

Every failure becomes one sentence: RunPod's own `errors` entry names the field it refused
(its documented form is ``$.gpu.pools: ...``), so that is what the user sees. The key travels
only in the Authorization header and never appears in a message.
"""

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from podenv.errors import DeployError

DEFAULT_API_URL = "https://api.runpod.io"  # the OpenAPI document's server
_RETRIED_STATUS = {429, 502, 503, 504}
_ATTEMPTS = 4
_MAX_WAIT_S = 30.0
_DETAIL_MAX = 300


class RunPodError(DeployError):
    """RunPod's API refused a request, or could not be reached."""


@dataclass
class Call:
    """One request as sent: what --dry-run prints and the tests check against the document."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    why: str = ""
    response: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"method": self.method, "path": self.path, "why": self.why}
        if self.body is not None:
            document["body"] = self.body
        return document


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def refusal(method: str, path: str, status: int, body: bytes) -> str:
    """One line from an error response: the field RunPod named, else its detail."""
    try:
        problem = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        problem = None
    if not isinstance(problem, dict):
        return f"RunPod refused {method} {path} with HTTP {status} (no problem details in the answer)."
    errors = [str(entry) for entry in problem.get("errors") or []]
    title = str(problem.get("title") or "")
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        reason = f"{errors[0]}{more}"
    else:
        reason = str(problem.get("detail") or title or "no detail given")
    label = f"{status} {title}".strip()
    line = f"RunPod refused {method} {path} ({label}): {reason}"
    return _short(line if line.endswith(".") else line + ".")


def _retry_after(error: urllib.error.HTTPError, attempt: int) -> float:
    header = error.headers.get("Retry-After") if error.headers else None
    try:
        wait = float(header) if header is not None else 2.0**attempt
    except ValueError:
        wait = 2.0**attempt
    return min(max(wait, 0.0), _MAX_WAIT_S)


class RunPodAPI:
    def __init__(self, api_key: str, base_url: str = DEFAULT_API_URL, timeout: float = 30.0) -> None:
        self._key = api_key
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    def _open(self, method: str, path: str, body: dict[str, Any] | None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self._base}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._key}")
        request.add_header("Accept", "application/json, application/problem+json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            return response.read()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # POST creates: never repeated, a retry after a lost answer could create a twin.
        attempts = 1 if method == "POST" else _ATTEMPTS
        for attempt in range(attempts):
            try:
                raw = self._open(method, path, body)
                break
            except urllib.error.HTTPError as error:
                payload = error.read()
                if error.code in _RETRIED_STATUS and attempt + 1 < attempts:
                    time.sleep(_retry_after(error, attempt))
                    continue
                raise RunPodError(refusal(method, path, error.code, payload)) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = getattr(error, "reason", error)
                raise RunPodError(f"cannot reach RunPod's API at {self._base}: {reason}.") from None
        try:
            return json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RunPodError(f"RunPod answered {method} {path} with a body that is not JSON.") from None
