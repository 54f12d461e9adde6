"""In-process fake upstreams on loopback, for tests and benchmarks."""
