"""Persistence behind one contract: SQLite (embedded default) and PostgreSQL (asyncpg under trio-asyncio)."""
