"""The I/O edge of each provider: an HTTP stream (any dialect) or a CLI subprocess (one per request,
or waiting in a warm pool), wrapped around the pure wire code of `protocol/wire/`."""
