"""The HTTP handlers, one Quart blueprint per API: OpenAI, Anthropic, the management API, the
dashboard's pages, and operations (ping, health, actors, metrics). Thin: parse, ask, render."""
