"""Each contract name is defined once per side: podenv's in podenv/layout.py, settings.py and
log.py; the worker's mirrors (it cannot import podenv, ADR 0006) equal to them."""

import json
import logging
import re
from pathlib import Path

from podenv import layout, log, settings
from podenv.manifest import schema
from worker import layout as worker_layout
from worker import logs as worker_logs
from worker import settings as worker_settings

REPOSITORY = Path(__file__).parents[2]


def test_the_workers_layout_names_are_podenvs() -> None:
    assert worker_layout.HF_HUB_TARGET == layout.HF_HUB_TARGET
    assert worker_layout.TORCH_HUB_TARGET == layout.TORCH_HUB_TARGET
    assert worker_layout.CACHE_VARIABLES == layout.CACHE_VARIABLES
    for repo_id, repo_type in [("SWivid/F5-TTS", "model"), ("org/name", "dataset"), ("single", "model")]:
        assert worker_layout.hub_folder(repo_id, repo_type) == layout.hub_folder(repo_id, repo_type)
    assert layout.hub_folder("SWivid/F5-TTS") == "models--SWivid--F5-TTS"


def test_the_schemas_targets_are_the_layouts() -> None:
    layer = schema()["$defs"]["layer"]["properties"]["target"]["enum"]
    assert tuple(layer) == layout.TARGETS
    env_spec = json.loads((REPOSITORY / "podenv/schemas/env-spec.v1.json").read_text())
    model_targets = re.findall(r'"target": \{"enum": (\[[^]]*\])', json.dumps(env_spec))
    assert [tuple(json.loads(found)) for found in model_targets] == [layout.MODEL_TARGETS]
    assert set(layout.VIEW_DIRS) == set(layout.TARGETS)


def test_the_workers_variables_are_podenvs() -> None:
    worker_side = {
        s.name: s.default for s in settings.SETTINGS if s.side == "worker" or s is settings.LOG_FORMAT
    }
    assert worker_side == worker_settings.DEFAULTS


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("podenv.test", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    record.__dict__.update(extra)
    return record


def test_podenv_and_the_worker_write_one_json_log_schema() -> None:
    assert worker_layout.LOG_KEYS == log.LOG_KEYS
    record = _record(fields={"bytes": 5, "nested": {"a": 1}})
    ours = json.loads(log.JsonLineFormatter().format(record))
    theirs = json.loads(worker_logs._JsonFormatter().format(record))
    assert ours == theirs
    assert list(ours)[:4] == list(log.LOG_KEYS) and ours["msg"] == "hello there" and ours["bytes"] == 5


def test_text_lines_carry_the_message_and_only_the_fields_named() -> None:
    record = _record(
        fields={"started": 1796158943.35, "error": None, "report": "/r.json"}, text_fields=("report",)
    )
    assert log.TextFormatter().format(record) == "hello there report=/r.json"
    assert worker_logs._TextFormatter().format(record) == "info podenv.test: hello there [report=/r.json]"
    plain = _record(fields={"started": 1796158943.35, "host": "h"})
    assert log.TextFormatter().format(plain) == "hello there"
    assert worker_logs._TextFormatter().format(plain) == "info podenv.test: hello there"


def test_contract_literals_are_spelled_only_where_they_are_defined() -> None:
    """The layer marker, the relocations file and the hub folder pattern, once in podenv/."""
    owners = {
        ".podenv-layer.json": "podenv/volume.py",
        "podenv-relocations.json": "podenv/layout.py",
        's--" + ': "podenv/layout.py",
    }
    for literal, owner in owners.items():
        spelled = sorted(
            str(path.relative_to(REPOSITORY))
            for path in (REPOSITORY / "podenv").rglob("*.py")
            if literal in path.read_text()
        )
        assert spelled == [owner], (literal, spelled)
