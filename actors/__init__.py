"""The running system: the supervisor, the router, one actor per provider, the recorder, the budget,
the key ring and the response cache's writer, each owning its state; transports are the I/O edges."""
