"""Versioned schema migrations, one list per back end; each runs once, in order, at start-up.

Seed 001's tables, extended for fallback (request_group_id, attempt, fallback_used, status),
clients, time to first token, cache tokens and the cost a request would have had on its baseline.
"""

from __future__ import annotations

_TASK_LOG_INDEXES = [
    "CREATE INDEX IF NOT EXISTS idx_task_logs_created_at ON task_logs (created_at DESC)",
    "CREATE INDEX IF NOT EXISTS idx_task_logs_provider ON task_logs (provider)",
    "CREATE INDEX IF NOT EXISTS idx_task_logs_model ON task_logs (model_selected)",
    "CREATE INDEX IF NOT EXISTS idx_task_logs_category ON task_logs (task_category)",
    "CREATE INDEX IF NOT EXISTS idx_task_logs_provider_category ON task_logs (provider, task_category)",
    "CREATE INDEX IF NOT EXISTS idx_task_logs_group ON task_logs (request_group_id)",
]


def _task_logs(*, uuid: str, time: str, boolean: str, money: str, true: str, false: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS task_logs (
  id                 {uuid} PRIMARY KEY,
  created_at         {time} NOT NULL,
  request_group_id   {uuid} NOT NULL,
  attempt            INTEGER NOT NULL DEFAULT 1,
  task_category      VARCHAR(50) NOT NULL DEFAULT 'other',
  complexity_score   INTEGER NOT NULL DEFAULT 0,
  prompt_summary     VARCHAR(500),
  message_count      INTEGER NOT NULL DEFAULT 0,
  provider           VARCHAR(50) NOT NULL,
  model_requested    VARCHAR(200),
  model_selected     VARCHAR(200) NOT NULL,
  router_reason      VARCHAR(300),
  status             VARCHAR(30) NOT NULL DEFAULT 'success',
  tokens_in          INTEGER NOT NULL DEFAULT 0,
  tokens_out         INTEGER NOT NULL DEFAULT 0,
  cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
  cache_write_tokens INTEGER NOT NULL DEFAULT 0,
  cost_usd           {money} NOT NULL DEFAULT 0,
  baseline_cost_usd  {money},
  latency_ms         INTEGER NOT NULL DEFAULT 0,
  ttft_ms            INTEGER,
  streaming          {boolean} NOT NULL DEFAULT {false},
  fallback_used      {boolean} NOT NULL DEFAULT {false},
  client             VARCHAR(200),
  tokens_before_compression INTEGER,
  tokens_after_compression  INTEGER,
  cache_hit          {boolean} NOT NULL DEFAULT {false},
  budget_remaining_usd {money},
  cli_success        {boolean} NOT NULL DEFAULT {true},
  heuristic_score    INTEGER,
  user_rating        INTEGER,
  error_message      VARCHAR(500)
)"""


def known_version(backend: str) -> int:
    """The newest schema version this relaybox knows for a storage back end ("sqlite", "postgres")."""
    return len(POSTGRES_MIGRATIONS if backend == "postgres" else SQLITE_MIGRATIONS)


SQLITE_MIGRATIONS: list[list[str]] = [
    [
        _task_logs(uuid="TEXT", time="REAL", boolean="INTEGER", money="REAL", true="1", false="0"),
        *_TASK_LOG_INDEXES,
        """CREATE TABLE IF NOT EXISTS budget_config (
             period TEXT PRIMARY KEY, limit_usd REAL NOT NULL DEFAULT 0,
             enabled INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS provider_config (
             provider_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,
             priority INTEGER NOT NULL DEFAULT 0, config_json TEXT NOT NULL DEFAULT '{}',
             created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    ],
]

POSTGRES_MIGRATIONS: list[list[str]] = [
    [
        _task_logs(
            uuid="UUID",
            time="TIMESTAMPTZ",
            boolean="BOOLEAN",
            money="NUMERIC(14,8)",
            true="true",
            false="false",
        ),
        *_TASK_LOG_INDEXES,
        """CREATE TABLE IF NOT EXISTS budget_config (
             id UUID PRIMARY KEY DEFAULT gen_random_uuid(), period VARCHAR(20) NOT NULL UNIQUE,
             limit_usd NUMERIC(10,2) NOT NULL DEFAULT 0, enabled BOOLEAN NOT NULL DEFAULT false,
             updated_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
        """CREATE TABLE IF NOT EXISTS provider_config (
             id UUID PRIMARY KEY DEFAULT gen_random_uuid(), provider_id VARCHAR(50) NOT NULL UNIQUE,
             display_name VARCHAR(100) NOT NULL, enabled BOOLEAN NOT NULL DEFAULT true,
             priority INTEGER NOT NULL DEFAULT 0, config_json JSONB DEFAULT '{}',
             created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
    ],
]


# Version 2: a daily rollup the recorder keeps in step with task_logs (in the same transaction),
# so the dashboard reads a few hundred rows instead of scanning a period of raw attempts.
ROLLUP_KEY = ("day", "provider", "model_selected", "task_category", "status")
ROLLUP_SUMS = (
    "attempts",
    "requests",
    "cost_usd",
    "tokens_in",
    "tokens_out",
    "cache_hits",
    "fallbacks",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
    "heuristic_sum",
    "heuristic_count",
    "rating_sum",
    "rating_count",
    "saved_usd",
    "tokens_saved",
)


def _rollup(*, money: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS task_stats (
  day            VARCHAR(10) NOT NULL,
  provider       VARCHAR(50) NOT NULL,
  model_selected VARCHAR(200) NOT NULL,
  task_category  VARCHAR(50) NOT NULL,
  status         VARCHAR(30) NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, requests INTEGER NOT NULL DEFAULT 0, cost_usd {money} NOT NULL DEFAULT 0,
  tokens_in BIGINT NOT NULL DEFAULT 0, tokens_out BIGINT NOT NULL DEFAULT 0, cache_hits INTEGER NOT NULL DEFAULT 0,
  fallbacks INTEGER NOT NULL DEFAULT 0, latency_ms_sum BIGINT NOT NULL DEFAULT 0, ttft_ms_sum BIGINT NOT NULL DEFAULT 0,
  ttft_count INTEGER NOT NULL DEFAULT 0, heuristic_sum BIGINT NOT NULL DEFAULT 0, heuristic_count INTEGER NOT NULL DEFAULT 0,
  rating_sum BIGINT NOT NULL DEFAULT 0, rating_count INTEGER NOT NULL DEFAULT 0, saved_usd {money} NOT NULL DEFAULT 0,
  tokens_saved BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (day, provider, model_selected, task_category, status)
)"""


def rollup_backfill(day: str, true: str) -> str:
    return f"""
INSERT INTO task_stats (day, provider, model_selected, task_category, status, attempts, requests, cost_usd,
  tokens_in, tokens_out, cache_hits, fallbacks, latency_ms_sum, ttft_ms_sum, ttft_count, heuristic_sum,
  heuristic_count, rating_sum, rating_count, saved_usd, tokens_saved)
SELECT {day}, provider, model_selected, task_category, status, count(*),
  sum(CASE WHEN attempt = 1 THEN 1 ELSE 0 END), sum(cost_usd), sum(tokens_in), sum(tokens_out),
  sum(CASE WHEN cache_hit = {true} THEN 1 ELSE 0 END), sum(CASE WHEN fallback_used = {true} THEN 1 ELSE 0 END),
  sum(latency_ms), coalesce(sum(ttft_ms), 0), count(ttft_ms), coalesce(sum(heuristic_score), 0),
  count(heuristic_score), coalesce(sum(user_rating), 0), count(user_rating),
  coalesce(sum(baseline_cost_usd - cost_usd), 0),
  coalesce(sum(tokens_before_compression - tokens_after_compression), 0)
FROM task_logs GROUP BY 1, 2, 3, 4, 5"""


SQLITE_MIGRATIONS.append([_rollup(money="REAL"), rollup_backfill("date(created_at, 'unixepoch')", "1")])
POSTGRES_MIGRATIONS.append(
    [
        _rollup(money="NUMERIC(16,8)"),
        rollup_backfill("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "true"),
    ]
)


# Version 3: the budget ledger. A paid attempt reserves its estimated cost here before it runs and
# settles to the real cost after, so concurrent requests (and instances) cannot overspend.
SQLITE_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS budget_ledger (
         id TEXT PRIMARY KEY, created_at REAL NOT NULL, amount_usd REAL NOT NULL,
         settled INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX IF NOT EXISTS idx_budget_ledger_created_at ON budget_ledger (created_at)",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS budget_ledger (
         id UUID PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, amount_usd NUMERIC(14,8) NOT NULL,
         settled BOOLEAN NOT NULL DEFAULT false)""",
        "CREATE INDEX IF NOT EXISTS idx_budget_ledger_created_at ON budget_ledger (created_at)",
    ]
)


# Version 4: which A/B test (seed 001 §44) and which variant an attempt belonged to.
SQLITE_MIGRATIONS.append(
    [
        "ALTER TABLE task_logs ADD COLUMN ab_test TEXT",
        "ALTER TABLE task_logs ADD COLUMN ab_variant TEXT",
        "CREATE INDEX IF NOT EXISTS idx_task_logs_ab_test ON task_logs (ab_test, created_at)",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        "ALTER TABLE task_logs ADD COLUMN IF NOT EXISTS ab_test VARCHAR(100)",
        "ALTER TABLE task_logs ADD COLUMN IF NOT EXISTS ab_variant VARCHAR(20)",
        "CREATE INDEX IF NOT EXISTS idx_task_logs_ab_test ON task_logs (ab_test, created_at)",
    ]
)


# Version 5: the response cache's shared tier, for instances (or `--workers`) using one database.
SQLITE_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS response_cache (
         key TEXT PRIMARY KEY, answer TEXT NOT NULL, request_id TEXT NOT NULL,
         stored_at REAL NOT NULL, expires_at REAL NOT NULL, size INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS idx_response_cache_expires_at ON response_cache (expires_at)",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS response_cache (
         key VARCHAR(64) PRIMARY KEY, answer TEXT NOT NULL, request_id VARCHAR(100) NOT NULL,
         stored_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, size INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS idx_response_cache_expires_at ON response_cache (expires_at)",
    ]
)


# Version 6: client API keys (`relaybox keys`), stored as hashes only.
SQLITE_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS api_keys (
         name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
         admin INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, revoked_at REAL)""",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS api_keys (
         name VARCHAR(100) PRIMARY KEY, key_hash VARCHAR(64) NOT NULL UNIQUE, prefix VARCHAR(16) NOT NULL,
         admin BOOLEAN NOT NULL DEFAULT false, created_at DOUBLE PRECISION NOT NULL,
         revoked_at DOUBLE PRECISION)""",
    ]
)


# Version 7: per-key request limits, counted in one-minute windows every instance shares.
SQLITE_MIGRATIONS.append(
    [
        "ALTER TABLE api_keys ADD COLUMN rpm INTEGER",
        """CREATE TABLE IF NOT EXISTS key_windows (
         key_name TEXT NOT NULL, window_start INTEGER NOT NULL, requests INTEGER NOT NULL,
         PRIMARY KEY (key_name, window_start))""",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rpm INTEGER",
        """CREATE TABLE IF NOT EXISTS key_windows (
         key_name VARCHAR(100) NOT NULL, window_start BIGINT NOT NULL, requests INTEGER NOT NULL,
         PRIMARY KEY (key_name, window_start))""",
    ]
)


# Version 8: per-key token limits and budgets. Tokens are added to a key's minute as its attempts
# are recorded; a key's reservations are tagged in the ledger; `key_usage` is the per-key daily
# rollup the stats read (backfilled from the log).
def _key_usage(money: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS key_usage (
     day VARCHAR(10) NOT NULL, key_name VARCHAR(100) NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
     attempts INTEGER NOT NULL DEFAULT 0, tokens_in BIGINT NOT NULL DEFAULT 0,
     tokens_out BIGINT NOT NULL DEFAULT 0, cost_usd {money} NOT NULL DEFAULT 0,
     PRIMARY KEY (day, key_name))"""


def _key_usage_backfill(day: str, name_from: int) -> str:
    return f"""
INSERT INTO key_usage (day, key_name, requests, attempts, tokens_in, tokens_out, cost_usd)
SELECT {day}, substr(client, {name_from}), sum(CASE WHEN attempt = 1 THEN 1 ELSE 0 END), count(*),
  sum(tokens_in), sum(tokens_out), sum(cost_usd)
FROM task_logs WHERE client LIKE 'key:%' GROUP BY 1, 2"""


SQLITE_MIGRATIONS.append(
    [
        "ALTER TABLE api_keys ADD COLUMN tpm INTEGER",
        "ALTER TABLE api_keys ADD COLUMN budget_usd REAL",
        "ALTER TABLE api_keys ADD COLUMN budget_period TEXT",
        "ALTER TABLE key_windows ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE budget_ledger ADD COLUMN key_name TEXT",
        "CREATE INDEX IF NOT EXISTS idx_budget_ledger_key ON budget_ledger (key_name, created_at)",
        _key_usage("REAL"),
        _key_usage_backfill("date(created_at, 'unixepoch')", 5),
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS tpm INTEGER",
        "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS budget_usd NUMERIC(14,8)",
        "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS budget_period VARCHAR(10)",
        "ALTER TABLE key_windows ADD COLUMN IF NOT EXISTS tokens BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE budget_ledger ADD COLUMN IF NOT EXISTS key_name VARCHAR(100)",
        "CREATE INDEX IF NOT EXISTS idx_budget_ledger_key ON budget_ledger (key_name, created_at)",
        _key_usage("NUMERIC(16,8)"),
        _key_usage_backfill("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", 5),
    ]
)


# Version 9: the learned router's labels (a verdict on one model's answer to one prompt, the prompt
# as hashed features), shared by every instance using the database; the newest few thousand kept.
SQLITE_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS routing_labels (
             id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL, instance TEXT NOT NULL,
             provider TEXT NOT NULL, model TEXT NOT NULL, tier TEXT, features BLOB NOT NULL,
             good REAL NOT NULL, weight REAL NOT NULL DEFAULT 1, source TEXT NOT NULL,
             request_id TEXT)""",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS routing_labels (
             id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, instance VARCHAR(40) NOT NULL,
             provider VARCHAR(50) NOT NULL, model VARCHAR(200) NOT NULL, tier VARCHAR(20),
             features BYTEA NOT NULL, good REAL NOT NULL, weight REAL NOT NULL DEFAULT 1,
             source VARCHAR(20) NOT NULL, request_id VARCHAR(100))""",
    ]
)


# Version 10: responses kept for the Responses API (`store`), so a conversation continues by
# `previous_response_id` on any instance: each row holds its own turn (the input items it was sent,
# then its output items) and points to the response it continued.
SQLITE_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS stored_responses (
             id TEXT PRIMARY KEY, previous_id TEXT, owner TEXT NOT NULL, created_at REAL NOT NULL,
             items TEXT NOT NULL, body TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS idx_stored_responses_created_at ON stored_responses (created_at)",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS stored_responses (
             id VARCHAR(100) PRIMARY KEY, previous_id VARCHAR(100), owner VARCHAR(100) NOT NULL,
             created_at DOUBLE PRECISION NOT NULL, items TEXT NOT NULL, body TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS idx_stored_responses_created_at ON stored_responses (created_at)",
    ]
)


# Version 11: the quality promise's blind comparisons (the route's cheapest and strongest answers to
# one prompt drawn at random, judged without knowing which is which), shared by every instance using
# the database: a restart or a new instance keeps the evidence, and the dashboard reads what the
# promise kept day by day from them.
SQLITE_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS routing_comparisons (
             id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL, instance TEXT NOT NULL,
             score REAL NOT NULL, served_strong INTEGER NOT NULL, cheap_good INTEGER NOT NULL,
             strong_good INTEGER NOT NULL, cheap TEXT NOT NULL, strong TEXT NOT NULL, request_id TEXT)""",
        "CREATE INDEX IF NOT EXISTS idx_routing_comparisons_created_at ON routing_comparisons (created_at)",
    ]
)
POSTGRES_MIGRATIONS.append(
    [
        """CREATE TABLE IF NOT EXISTS routing_comparisons (
             id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL, instance VARCHAR(40) NOT NULL,
             score DOUBLE PRECISION NOT NULL, served_strong BOOLEAN NOT NULL, cheap_good BOOLEAN NOT NULL,
             strong_good BOOLEAN NOT NULL, cheap VARCHAR(260) NOT NULL, strong VARCHAR(260) NOT NULL,
             request_id VARCHAR(100))""",
        "CREATE INDEX IF NOT EXISTS idx_routing_comparisons_created_at ON routing_comparisons (created_at)",
    ]
)
