"""The shape of the code, as docs/architecture.md states it: imports point down the layers, no module
imports itself in a circle, asyncio stays inside the PostgreSQL storage, every message an actor
receives is defined in actors/messages.py, and no handler or actor grows past a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("protocol", "storage", "actors", "web")  # each may import only those before it (and itself)
WEB_FUNCTION_LINES = 80
ACTOR_CLASS_LINES = 260


def modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(("relaybox", *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The relaybox modules a module imports (a `from package import module` counts as the module)."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("relaybox"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                targets.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.startswith("relaybox")}
    return targets


def test_imports_point_down_the_layers() -> None:
    known = modules()
    upward = []
    for name, path in known.items():
        layer = LAYERS.index(name.split(".")[1])
        for target in imports_of(path, known):
            if LAYERS.index(target.split(".")[1]) > layer:
                upward.append(f"{name} imports {target}")
    assert upward == []


def test_no_module_imports_itself_in_a_circle() -> None:
    known = modules()
    graph = {name: imports_of(path, known) & set(known) for name, path in known.items()}
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            circles.append([*trail[trail.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [])
    assert circles == []


def test_asyncio_stays_inside_the_postgresql_storage() -> None:
    users = [
        name
        for name, path in modules().items()
        if {"asyncio", "asyncpg", "trio_asyncio"} & _top_level_imports(path)
    ]
    assert users == ["relaybox.storage.postgres"]


def test_every_mailbox_carries_messages_of_actors_messages() -> None:
    """`Mailbox[X]` in an actor: X is a name actors/messages.py defines."""
    messages = ast.parse((REPO / "actors" / "messages.py").read_text())
    defined = {n.name for n in messages.body if isinstance(n, ast.ClassDef)}
    defined |= {
        t.id for n in messages.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    strays = []
    for path in sorted((REPO / "actors").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id == "Mailbox"
            ):
                names = {n.id for n in ast.walk(node.slice) if isinstance(n, ast.Name)} - {"M"}
                strays += [f"{path.name}: Mailbox[{name}]" for name in names - defined]
    assert strays == []


@pytest.mark.parametrize(
    ("folder", "kind", "limit"),
    [
        ("web", (ast.FunctionDef, ast.AsyncFunctionDef), WEB_FUNCTION_LINES),
        ("actors", ast.ClassDef, ACTOR_CLASS_LINES),
    ],
)
def test_nothing_grows_past_a_readable_size(folder: str, kind: type | tuple[type, ...], limit: int) -> None:
    too_long = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, kind) and node.end_lineno - node.lineno + 1 > limit:  # type: ignore[attr-defined]
                too_long.append(f"{path.relative_to(REPO)}: {node.name}")  # type: ignore[attr-defined]
    assert too_long == []


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names
