"""Persistence behind one contract: SQLite (the embedded default) and PostgreSQL (asyncpg under
trio-asyncio), their schema migrations, the dashboard's queries and the records they keep."""
