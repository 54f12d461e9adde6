"""A generated request log for the benchmarks that need a big one (SQLite flavour)."""

SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
INSERT INTO task_logs (id, created_at, request_group_id, attempt, task_category, provider, model_selected, status,
                       tokens_in, tokens_out, cost_usd, latency_ms, ttft_ms, fallback_used, cache_hit)
SELECT lower(hex(randomblob(16))), {now} - (abs(random()) % 7776000), lower(hex(randomblob(16))), 1,
       'cat' || (i % 7), 'provider' || (i % 6), 'model' || (i % 20),
       CASE WHEN i % 17 = 0 THEN 'server_error' ELSE 'success' END,
       i % 2000, i % 500, (i % 100) / 10000.0, 100 + i % 900, 50 + i % 300, i % 29 = 0, i % 13 = 0
FROM n
"""
