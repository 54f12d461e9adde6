"""The actors' frozen statistics as JSON (cattrs, at the edge): for /actors, /health and the
management API."""

from __future__ import annotations

from typing import Any

import cattrs
from relaybox.actors.supervisor import ChildStatistics, SupervisorStatistics

_converter = cattrs.Converter()


def to_json(snapshot: object) -> Any:
    return _converter.unstructure(snapshot)


def actor_tree(tree: SupervisorStatistics) -> dict[str, Any]:
    """The supervision tree as /actors shows it: each child's facts and its own statistics side by side."""
    return {
        "name": tree.name,
        "kind": tree.kind,
        "policy": to_json(tree.policy),
        "children": [child_json(child) for child in tree.children],
    }


def child_json(child: ChildStatistics) -> dict[str, Any]:
    facts = to_json(child)
    actor = facts.pop("actor") or {}
    return {**facts, **actor}
