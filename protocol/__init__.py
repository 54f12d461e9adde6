"""Pure data and pure functions, no I/O: the neutral request, events and errors here, and the wire
formats (`wire/`), routing policy (`routing/`) and prompt compression (`compression/`) below."""
