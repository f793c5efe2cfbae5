"""Import rules: the worker never imports podenv (ADR 0006: it runs in the release's env,
where podenv is not installed), and the boot side (what the worker image runs) never
imports the build side (lock reading, env install, model fetching, publishing), not even
lazily inside a function."""

import ast
from pathlib import Path

REPOSITORY = Path(__file__).parents[2]

# What `podenv boot`, `status`, `gc` and `doctor` run on a worker, and what they import.
BOOT_SIDE = (
    "podenv.boot",
    "podenv.cli_boot",
    "podenv.doctor",
    "podenv.maintenance",
    "podenv.resolve",
    "podenv.volume",
    "podenv.relocate",
    "podenv.heartbeat",
)
# The build box's modules: they need py-rattler, conda-pack, uv, huggingface_hub.
BUILD_SIDE = (
    "podenv.buildconfig",
    "podenv.codelayer",
    "podenv.envbuild",
    "podenv.envspec",
    "podenv.lock",
    "podenv.models",
    "podenv.release",
    "podenv.cli_build",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPOSITORY).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _podenv_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in (REPOSITORY / "podenv").rglob("*.py")}
    return {name: {i for i in _imports(path) if i in modules} for name, path in modules.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        # Importing a.b.c imports its packages a and a.b too.
        parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        todo.extend((graph.get(module, set()) | parents) - seen)
    return seen


def test_the_worker_never_imports_podenv() -> None:
    offenders = {
        str(path.relative_to(REPOSITORY)): sorted(i for i in _imports(path) if i.split(".")[0] == "podenv")
        for path in (REPOSITORY / "worker").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_boot_side_never_imports_the_build_side() -> None:
    graph = _podenv_graph()
    boot_modules = [name for name in graph if name.startswith(BOOT_SIDE)]
    assert "podenv.boot.prepare" in boot_modules and "podenv.doctor" in boot_modules
    crossings = {}
    for module in boot_modules:
        build = sorted(name for name in _reachable(graph, module) if name.startswith(BUILD_SIDE))
        if build:
            crossings[module] = build
    assert crossings == {}, "a boot-side module reaches build-side code"


def test_the_rule_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from podenv.lock import read_plan\n    import podenv.models\n")
    assert {"podenv.lock", "podenv.lock.read_plan", "podenv.models"} <= _imports(module)
