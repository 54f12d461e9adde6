"""Prompt compression (seed 001's five stages): pure functions from messages to messages.

`pipeline.compress` runs them by level: `safe` (the default) only rewrites what cannot change
what the model reads (whitespace outside code and tool output, code blocks in languages where
whitespace carries no meaning, and content pasted again, which stays in full where it last
appears); `aggressive` also collapses spacing in tool output, abbreviates long repeated phrases
with a legend, minifies JSON and drops comment lines in code, and trims the oldest turns to fit
the chosen model's context window. Every stage leaves the last user message exactly as it was
and keeps tool calls paired with their results.
"""
