"""relaybox."""
