"""One tool definition, every dialect: an MCP tool's JSON Schema is the single source relaybox
makes OpenAI functions, Anthropic tools, Gemini function declarations and the CLIs' prompt from.
Property tests over generated schemas: each dialect keeps what it can express, and what Gemini
cannot is named by `gemini_drops`."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.tool_loop import McpTool
from relaybox.protocol.wire.anthropic_upstream import messages_body
from relaybox.protocol.wire.cli_prompt import tool_instructions
from relaybox.protocol.wire.gemini import from_gemini_schema, gemini_drops, generate_body, to_gemini_schema
from relaybox.protocol.wire.openai_upstream import upstream_request_body

# Keywords Gemini keeps (as written) and ones it has no place for.
KEPT = [
    "description",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "title",
    "default",
    "minItems",
    "maxItems",
]
DROPPED = ["additionalProperties", "examples", "multipleOf", "uniqueItems", "$comment", "deprecated"]
names = st.text("abcdefghij_", min_size=1, max_size=6)
values = {
    "description": st.text(max_size=20),
    "enum": st.lists(st.text("xyz", min_size=1, max_size=3), min_size=1, max_size=3, unique=True),
    "format": st.sampled_from(["date-time", "email", "uri"]),
    "minimum": st.integers(-10, 10),
    "maximum": st.integers(11, 99),
    "minLength": st.integers(0, 5),
    "maxLength": st.integers(6, 50),
    "pattern": st.sampled_from(["^a", "[0-9]+"]),
    "title": st.text("Tt ", max_size=8),
    "default": st.integers(0, 3),
    "minItems": st.integers(0, 2),
    "maxItems": st.integers(3, 9),
    "additionalProperties": st.booleans(),
    "examples": st.lists(st.integers(), max_size=2),
    "multipleOf": st.integers(1, 5),
    "uniqueItems": st.booleans(),
    "$comment": st.text(max_size=10),
    "deprecated": st.booleans(),
}


def keywords() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(KEPT + DROPPED), st.none()).flatmap(
        lambda chosen: st.fixed_dictionaries({key: values[key] for key in chosen})
    )


leaf = st.tuples(st.sampled_from(["string", "integer", "number", "boolean"]), keywords()).map(
    lambda pair: {"type": pair[0], **pair[1]}
)


def extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    objects = st.tuples(st.dictionaries(names, inner, max_size=4), keywords()).map(
        lambda pair: {
            "type": "object",
            "properties": pair[0],
            "required": sorted(pair[0])[:1],
            **{k: v for k, v in pair[1].items() if k != "default"},
        }
    )
    arrays = st.tuples(inner, keywords()).map(lambda pair: {"type": "array", "items": pair[0], **pair[1]})
    nullable = inner.filter(lambda schema: isinstance(schema["type"], str)).map(
        lambda schema: {**schema, "type": [schema["type"], "null"]}
    )
    return objects | arrays | nullable


schemas = st.recursive(leaf, extend, max_leaves=8).map(
    lambda schema: (
        schema if schema.get("type") == "object" else {"type": "object", "properties": {"value": schema}}
    )
)


def request_with(schema: dict[str, Any]) -> ChatRequest:
    tool = McpTool("fs", "probe", "A tool.", schema)
    return ChatRequest("m", (ChatMessage("user", "hi"),), tools=(tool.spec(),))


@settings(max_examples=150, deadline=None)
@given(schemas)
def test_openai_anthropic_and_the_clis_carry_the_schema_unchanged(schema: dict[str, Any]) -> None:
    request = request_with(schema)
    [openai_tool] = upstream_request_body(request, "m")["tools"]
    assert openai_tool["function"] == {
        "name": "mcp__fs__probe",
        "description": "A tool.",
        "parameters": schema,
    }
    [anthropic_tool] = messages_body(request, "m")["tools"]
    assert anthropic_tool["input_schema"] == schema and anthropic_tool["name"] == "mcp__fs__probe"
    listed = tool_instructions(request).split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(listed) == [{"name": "mcp__fs__probe", "description": "A tool.", "parameters": schema}]
    [declaration] = generate_body(request)["tools"][0]["functionDeclarations"]
    assert declaration["parameters"] == to_gemini_schema(schema)


def flattened(schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Every keyword of a schema by its path (`properties.a.items.maxLength`), sub-schemas walked."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            for name, sub in value.items():
                out.update(flattened(sub, f"{path}properties.{name}."))
        elif key == "items":
            out.update(flattened(value, f"{path}items."))
        else:
            out[f"{path}{key}"] = value
    return out


@settings(max_examples=300, deadline=None)
@given(schemas)
def test_gemini_keeps_what_it_can_express_and_names_what_it_drops(schema: dict[str, Any]) -> None:
    source = flattened(schema)
    back = flattened(from_gemini_schema(to_gemini_schema(schema)))
    named = {drop.replace("(top): ", "").replace(": ", ".") for drop in gemini_drops(schema)}
    for path, value in source.items():
        keyword = path.rsplit(".", 1)[-1]
        if keyword == "type":
            assert back[path] == value, path  # nullable types come back as the same union
        elif keyword in KEPT or keyword == "required":
            assert back[path] == value, f"{path} was kept as it is"
        else:
            assert path not in back and path in named, f"{path} is dropped, and said to be"
    assert named == {path for path in source if path.rsplit(".", 1)[-1] in DROPPED}
