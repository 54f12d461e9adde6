"""Prompt compression: five pure stages from messages to messages (whitespace, repeats, symbols, code
blocks, trimming), and the levels that choose among them (`pipeline.py`)."""
