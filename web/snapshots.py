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


def failure_kind(last_failure: str | None) -> str | None:
    """A provider's last failure without its details ("rejected: HTTP 400: ..." -> "rejected"): an
    upstream's error message can quote the prompt that caused it."""
    return None if last_failure is None else last_failure.split(":", 1)[0]


def without_failure_details(tree: dict[str, Any]) -> dict[str, Any]:
    """The /actors tree with each provider's last failure reduced to its kind."""
    for child in tree["children"]:
        if child.get("last_failure"):
            child["last_failure"] = failure_kind(child["last_failure"])
    return tree


def child_json(child: ChildStatistics) -> dict[str, Any]:
    facts = to_json(child)
    actor = facts.pop("actor") or {}
    return {**facts, **actor}
