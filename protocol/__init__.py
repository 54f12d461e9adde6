"""Pure data and pure functions: messages, wire formats, translations, errors. No I/O here."""
