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
