"""The I/O edge of each provider: an HTTP stream or a subprocess, wrapped around pure wire code."""
