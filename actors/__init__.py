"""The running system: supervisor, router, provider actors. Each actor owns its state."""
