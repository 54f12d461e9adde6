"""The dashboard's questions as SQL, written once for both back ends.

A `Flavor` supplies what differs: placeholders, turning a timestamp into a day, and the
lower time bound. Every query filters on `created_at` first, so the created_at index bounds
the scan to the period asked for.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Flavor:
    name: str
    day: str  # SQL expression: created_at as 'YYYY-MM-DD'
    since: str  # SQL expression comparing created_at with the first parameter (Unix seconds)
    true: str

    def param(self, index: int) -> str:
        return "?" if self.name == "sqlite" else f"${index}"


SQLITE = Flavor("sqlite", "date(created_at, 'unixepoch')", "created_at >= ?", "1")
POSTGRES = Flavor(
    "postgres",
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "created_at >= to_timestamp($1)",
    "true",
)


def stats_queries(f: Flavor) -> dict[str, str]:
    ok = "(status = 'success')"
    return {
        "totals": f"""
            SELECT count(*) AS attempts, count(DISTINCT request_group_id) AS requests,
                   coalesce(sum(cost_usd), 0) AS cost_usd,
                   sum(CASE WHEN {ok} THEN 1 ELSE 0 END) AS successes,
                   sum(CASE WHEN cache_hit = {f.true} THEN 1 ELSE 0 END) AS cache_hits,
                   sum(CASE WHEN fallback_used = {f.true} THEN 1 ELSE 0 END) AS fallbacks,
                   count(DISTINCT provider) AS providers_active,
                   coalesce(sum(tokens_in), 0) AS tokens_in, coalesce(sum(tokens_out), 0) AS tokens_out,
                   coalesce(sum(baseline_cost_usd - cost_usd), 0) AS saved_usd,
                   coalesce(sum(tokens_before_compression - tokens_after_compression), 0) AS tokens_saved,
                   avg(latency_ms) AS avg_latency_ms
            FROM task_logs WHERE {f.since}""",
        "cost_by_day": f"""
            SELECT {f.day} AS day, provider, coalesce(sum(cost_usd), 0) AS cost_usd, count(*) AS attempts
            FROM task_logs WHERE {f.since} GROUP BY 1, 2 ORDER BY 1, 2""",
        "volume_by_day": f"""
            SELECT {f.day} AS day, count(*) AS attempts, sum(CASE WHEN {ok} THEN 1 ELSE 0 END) AS successes,
                   sum(CASE WHEN cache_hit = {f.true} THEN 1 ELSE 0 END) AS cache_hits,
                   coalesce(sum(tokens_before_compression - tokens_after_compression), 0) AS tokens_saved
            FROM task_logs WHERE {f.since} GROUP BY 1 ORDER BY 1""",
        "models": f"""
            SELECT provider, model_selected AS model, count(*) AS attempts, coalesce(sum(cost_usd), 0) AS cost_usd,
                   coalesce(sum(tokens_in), 0) AS tokens_in, coalesce(sum(tokens_out), 0) AS tokens_out
            FROM task_logs WHERE {f.since} GROUP BY 1, 2 ORDER BY 4 DESC, 3 DESC""",
        "success_rates": f"""
            SELECT provider, model_selected AS model, task_category AS category, count(*) AS attempts,
                   sum(CASE WHEN {ok} THEN 1 ELSE 0 END) AS successes, avg(heuristic_score) AS avg_heuristic,
                   avg(user_rating) AS avg_rating
            FROM task_logs WHERE {f.since} AND status <> 'cancelled' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        "providers": f"""
            SELECT provider, count(*) AS attempts, coalesce(sum(cost_usd), 0) AS cost_usd,
                   avg(latency_ms) AS avg_latency_ms, avg(ttft_ms) AS avg_ttft_ms,
                   sum(CASE WHEN {ok} THEN 1 ELSE 0 END) AS successes,
                   avg(tokens_in + tokens_out) AS avg_tokens
            FROM task_logs WHERE {f.since} GROUP BY 1 ORDER BY 1""",
    }
