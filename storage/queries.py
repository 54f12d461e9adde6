"""The dashboard's questions as SQL, written once for both back ends.

A `Flavor` supplies what differs: placeholders, turning a timestamp into a day, and the
lower time bound. Every query filters on `created_at` first, so the created_at index bounds
the scan to the period asked for.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

import attrs
from relaybox.protocol.keys import key_name_of
from relaybox.protocol.routing.evidence import RollupRow
from relaybox.storage.schema import ROLLUP_KEY, ROLLUP_SUMS


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


# How the dashboard counts a request-log row, by its status. A client's request is answered by a
# success or by joining an identical request in flight; relaybox's own calls (the learned router's
# shadow answers and a judge's verdicts, the tool loop's MCP tool calls, connection tests) are
# background work no client asked for: neither requests nor failures, counted apart.
ANSWERED = ("success", "deduplicated")
BACKGROUND = tuple(
    f"{purpose}{end}" for purpose in ("shadow", "judge", "tool", "test") for end in ("", "_failed")
)
# A tool call is not a call to a model: it stays out of the provider and model charts.
TOOL_CALLS = ("tool", "tool_failed")


def _among(statuses: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{status}'" for status in statuses))


def stats_queries(f: Flavor) -> dict[str, str]:
    """Each reads a daily rollup (task_stats, key_usage) from the first parameter's day on ('YYYY-MM-DD').

    `requests` and `attempts` are clients' (a request's first attempt, and every attempt including
    fallbacks), `successes` the attempts that answered (how each request ended: `outcomes_query`);
    background calls are counted on their own."""
    since = f"day >= {f.param(1)}"
    client = f"NOT {_among(BACKGROUND)}"
    model_calls = f"NOT {_among(TOOL_CALLS)}"
    answered = f"CASE WHEN {_among(ANSWERED)} THEN attempts ELSE 0 END"
    # For a provider, its background calls that succeeded are calls that worked, too.
    worked = f"CASE WHEN {_among((*ANSWERED, 'shadow', 'judge', 'test'))} THEN attempts ELSE 0 END"

    def of_clients(column: str) -> str:
        return f"CASE WHEN {client} THEN {column} ELSE 0 END"

    return {
        "totals": f"""
            SELECT coalesce(sum({of_clients("attempts")}), 0) AS attempts,
                   coalesce(sum({of_clients("requests")}), 0) AS requests,
                   coalesce(sum({answered}), 0) AS successes,
                   coalesce(sum(CASE WHEN status = 'cancelled' THEN attempts ELSE 0 END), 0) AS cancelled_attempts,
                   coalesce(sum(cost_usd), 0) AS cost_usd,
                   coalesce(sum(cache_hits), 0) AS cache_hits, coalesce(sum(fallbacks), 0) AS fallbacks,
                   count(DISTINCT CASE WHEN {model_calls} THEN provider END) AS providers_active,
                   coalesce(sum(tokens_in), 0) AS tokens_in, coalesce(sum(tokens_out), 0) AS tokens_out,
                   coalesce(sum(saved_usd), 0) AS saved_usd, coalesce(sum(tokens_saved), 0) AS tokens_saved,
                   sum(latency_ms_sum) * 1.0 / nullif(sum(attempts), 0) AS avg_latency_ms
            FROM task_stats WHERE {since}""",
        "cost_by_day": f"""
            SELECT day, provider, sum(cost_usd) AS cost_usd, sum(attempts) AS attempts
            FROM task_stats WHERE {since} AND {model_calls} GROUP BY 1, 2 ORDER BY 1, 2""",
        "volume_by_day": f"""
            SELECT day, sum({of_clients("attempts")}) AS attempts, sum({answered}) AS successes,
                   sum(CASE WHEN {_among(BACKGROUND)} THEN attempts ELSE 0 END) AS background,
                   sum(cache_hits) AS cache_hits, sum(tokens_saved) AS tokens_saved
            FROM task_stats WHERE {since} GROUP BY 1 ORDER BY 1""",
        "models": f"""
            SELECT provider, model_selected AS model, sum(attempts) AS attempts, sum(cost_usd) AS cost_usd,
                   sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out
            FROM task_stats WHERE {since} AND {client} GROUP BY 1, 2 ORDER BY 4 DESC, 3 DESC""",
        "success_rates": f"""
            SELECT provider, model_selected AS model, task_category AS category, sum(attempts) AS attempts,
                   sum({answered}) AS successes,
                   sum(heuristic_sum) * 1.0 / nullif(sum(heuristic_count), 0) AS avg_heuristic,
                   sum(rating_sum) * 1.0 / nullif(sum(rating_count), 0) AS avg_rating
            FROM task_stats WHERE {since} AND {client} AND status <> 'cancelled'
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        "providers": f"""
            SELECT provider, sum(attempts) AS attempts, sum(cost_usd) AS cost_usd,
                   sum(latency_ms_sum) * 1.0 / nullif(sum(attempts), 0) AS avg_latency_ms,
                   sum(ttft_ms_sum) * 1.0 / nullif(sum(ttft_count), 0) AS avg_ttft_ms,
                   sum({worked}) AS successes,
                   (sum(tokens_in) + sum(tokens_out)) * 1.0 / nullif(sum(attempts), 0) AS avg_tokens
            FROM task_stats WHERE {since} AND {model_calls} GROUP BY 1 ORDER BY 1""",
        # Background calls by status (a failed one is `<purpose>_failed`), with what they cost.
        "background": f"""
            SELECT status, sum(attempts) AS attempts, sum(cost_usd) AS cost_usd
            FROM task_stats WHERE {since} AND {_among(BACKGROUND)} GROUP BY 1 ORDER BY 1""",
        # What the learned router's own calls (shadow answers, a judge's verdicts) cost.
        "learning_spend": f"""
            SELECT status, provider, model_selected AS model, sum(attempts) AS attempts,
                   sum(cost_usd) AS cost_usd
            FROM task_stats WHERE {since} AND {_among(("shadow", "shadow_failed", "judge", "judge_failed"))}
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        # What learning cost each day (shadow answers, a judge's verdicts), beside all spending.
        "learning_by_day": f"""
            SELECT day, sum(cost_usd) AS cost_usd,
                   sum(CASE WHEN {_among(("shadow", "shadow_failed", "judge", "judge_failed"))}
                       THEN cost_usd ELSE 0 END) AS learning_usd
            FROM task_stats WHERE {since} GROUP BY 1 ORDER BY 1""",
        # The per-key rollup (requests made with a client key), same days.
        "keys": f"""
            SELECT key_name AS key, sum(requests) AS requests, sum(attempts) AS attempts,
                   sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out, sum(cost_usd) AS cost_usd
            FROM key_usage WHERE {since} GROUP BY 1 ORDER BY 1""",
    }


def outcomes_query(f: Flavor) -> str:
    """Clients' requests since the first parameter (Unix seconds), by the day each began, and how
    each ended: its last attempt answered it, the client cancelled it, or (neither) it failed.

    Read from the request log, not the rollup: the rollup counts attempts, and one request's
    attempts can answer more than once (a tool loop's steps each succeed) or fail before a
    fallback answers."""
    return f"""
        SELECT day, count(*) AS requests,
               sum(CASE WHEN last_answered = last THEN 1 ELSE 0 END) AS answered,
               sum(CASE WHEN last_cancelled = last THEN 1 ELSE 0 END) AS cancelled
        FROM (SELECT min({f.day}) AS day, max(attempt) AS last,
                     max(CASE WHEN {_among(ANSWERED)} THEN attempt END) AS last_answered,
                     max(CASE WHEN status = 'cancelled' THEN attempt END) AS last_cancelled
              FROM task_logs WHERE {f.since} AND attempt >= 1 AND NOT {_among(BACKGROUND)}
              GROUP BY request_group_id) AS each_request
        GROUP BY day ORDER BY day"""


def rollup_rows(records: list[Any]) -> list[tuple[Any, ...]]:
    """New records folded into rollup deltas: (day, provider, model, category, status, *sums)."""
    groups: dict[tuple[str, str, str, str, str], list[float]] = {}
    for r in records:
        day = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
        sums = groups.setdefault((day, r.provider, r.model_selected, r.task_category, r.status), [0.0] * 16)
        deltas = (
            1,
            1 if r.attempt == 1 else 0,
            r.cost_usd,
            r.tokens_in,
            r.tokens_out,
            1 if r.cache_hit else 0,
            1 if r.fallback_used else 0,
            r.latency_ms,
            r.ttft_ms or 0,
            0 if r.ttft_ms is None else 1,
            r.heuristic_score or 0,
            0 if r.heuristic_score is None else 1,
            r.user_rating or 0,
            0 if r.user_rating is None else 1,
            0 if r.baseline_cost_usd is None else r.baseline_cost_usd - r.cost_usd,
            0
            if r.tokens_before_compression is None or r.tokens_after_compression is None
            else r.tokens_before_compression - r.tokens_after_compression,
        )
        for i, delta in enumerate(deltas):
            sums[i] += delta
    return [
        (*key, *(round(v) if i not in (2, 14) else v for i, v in enumerate(sums)))
        for key, sums in groups.items()
    ]


def since_day(since: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(since))


def promise_by_day_query(f: Flavor) -> str:
    """The quality promise's blind comparisons since the first parameter (Unix seconds), by day,
    as the sums its estimate needs (`promise.GainSums`): gains are strong minus cheap verdicts."""
    gain = "(CASE WHEN strong_good THEN 1 ELSE 0 END) - (CASE WHEN cheap_good THEN 1 ELSE 0 END)"
    return f"""
        SELECT day, count(*) AS comparisons, coalesce(sum(gain), 0) AS gained,
               coalesce(sum(CASE WHEN served_strong THEN gain ELSE 0 END), 0) AS gained_kept,
               coalesce(sum(CASE WHEN gain <> 0 THEN 1 ELSE 0 END), 0) AS changed,
               coalesce(sum(CASE WHEN gain <> 0 AND served_strong THEN 1 ELSE 0 END), 0) AS changed_kept
        FROM (SELECT {f.day} AS day, served_strong, {gain} AS gain
              FROM routing_comparisons WHERE {f.since}) AS compared
        GROUP BY day ORDER BY day"""


def day_start(day: str) -> float:
    """The Unix time a 'YYYY-MM-DD' day (UTC) begins: the request log read over the rollup's days."""
    return float(calendar.timegm(time.strptime(day, "%Y-%m-%d")))


def key_usage_rows(records: list[Any]) -> list[tuple[Any, ...]]:
    """New records of requests made with a key, folded into the per-key daily rollup:
    (day, key, requests, attempts, tokens_in, tokens_out, cost)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in records:
        name = key_name_of(r.client)
        if name is None:
            continue
        day = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
        sums = groups.setdefault((day, name), [0, 0, 0, 0, 0.0])
        for i, delta in enumerate((1 if r.attempt == 1 else 0, 1, r.tokens_in, r.tokens_out, r.cost_usd)):
            sums[i] += delta
    return [(*key, *sums) for key, sums in groups.items()]


def key_minute_rows(records: list[Any]) -> list[tuple[str, int, int]]:
    """The tokens each key used per minute, for its tokens-per-minute limit: (key, minute, tokens).
    A replayed answer (cache hit) used none upstream."""
    groups: dict[tuple[str, int], int] = {}
    for r in records:
        name = key_name_of(r.client)
        tokens = r.tokens_in + r.tokens_out
        if name is None or r.cache_hit or not tokens:
            continue
        minute = int(r.created_at // 60) * 60
        groups[(name, minute)] = groups.get((name, minute), 0) + tokens
    return [(*key, tokens) for key, tokens in groups.items()]


def key_usage_upsert(f: Flavor) -> str:
    p = f.param
    sums = ("requests", "attempts", "tokens_in", "tokens_out", "cost_usd")
    return (
        "INSERT INTO key_usage (day, key_name, requests, attempts, tokens_in, tokens_out, cost_usd) "
        f"VALUES ({', '.join(p(i) for i in range(1, 8))}) ON CONFLICT (day, key_name) DO UPDATE SET "
        + ", ".join(f"{c} = key_usage.{c} + excluded.{c}" for c in sums)
    )


def key_tokens_upsert(f: Flavor) -> str:
    p = f.param
    return (
        f"INSERT INTO key_windows (key_name, window_start, requests, tokens) VALUES ({p(1)}, {p(2)}, 0, {p(3)}) "
        "ON CONFLICT (key_name, window_start) DO UPDATE SET tokens = key_windows.tokens + excluded.tokens"
    )


def rollup_upsert(f: Flavor) -> str:
    columns = (*ROLLUP_KEY, *ROLLUP_SUMS)
    values = ", ".join(f.param(i) for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = task_stats.{c} + excluded.{c}" for c in ROLLUP_SUMS)
    return (
        f"INSERT INTO task_stats ({', '.join(columns)}) VALUES ({values}) "
        f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {updates}"
    )


def rating_update(f: Flavor) -> str:
    """Move one rating into the rollup: params (rating delta, count delta, day, provider, model, category, status)."""
    p = f.param
    return (
        f"UPDATE task_stats SET rating_sum = rating_sum + {p(1)}, rating_count = rating_count + {p(2)} "
        f"WHERE day = {p(3)} AND provider = {p(4)} AND model_selected = {p(5)} AND task_category = {p(6)} "
        f"AND status = {p(7)}"
    )


def evidence_query(f: Flavor) -> str:
    """What smart routing learns from: the rollup's days from the first parameter's day on."""
    return f"""
        SELECT day, provider, model_selected AS model, task_category AS category, status,
               sum(attempts) AS attempts, sum(heuristic_sum) AS heuristic_sum,
               sum(heuristic_count) AS heuristic_count, sum(rating_sum) AS rating_sum,
               sum(rating_count) AS rating_count
        FROM task_stats WHERE day >= {f.param(1)} GROUP BY 1, 2, 3, 4, 5"""


def ab_results_query(f: Flavor) -> str:
    """Per A/B test and variant since the first parameter: the served attempts' outcomes."""
    ok = "CASE WHEN status = 'success' THEN 1 ELSE 0 END"
    return f"""
        SELECT ab_test AS test, ab_variant AS variant, provider, model_selected AS model,
               count(*) AS attempts, sum({ok}) AS successes, sum(cost_usd) AS cost_usd,
               avg(latency_ms) AS avg_latency_ms, avg(heuristic_score) AS avg_heuristic,
               avg(user_rating) AS avg_rating, count(user_rating) AS ratings
        FROM task_logs WHERE ab_test IS NOT NULL AND {f.since} AND status <> 'cancelled'
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"""


def evidence_rows(rows: list[dict[str, Any]]) -> list[RollupRow]:
    return [
        RollupRow(
            day_start=calendar.timegm(time.strptime(row["day"], "%Y-%m-%d")),
            provider=row["provider"],
            model=row["model"],
            category=row["category"],
            status=row["status"],
            attempts=int(row["attempts"]),
            heuristic_sum=float(row["heuristic_sum"]),
            heuristic_count=int(row["heuristic_count"]),
            rating_sum=float(row["rating_sum"]),
            rating_count=int(row["rating_count"]),
        )
        for row in rows
    ]


STORED_RESPONSE_COLUMNS = ("id", "previous_id", "owner", "created_at", "items", "body")


def stored_response_insert(f: Flavor) -> str:
    values = ", ".join(f.param(i + 1) for i in range(len(STORED_RESPONSE_COLUMNS)))
    return (
        f"INSERT INTO stored_responses ({', '.join(STORED_RESPONSE_COLUMNS)}) VALUES ({values}) "
        "ON CONFLICT (id) DO NOTHING"
    )


def response_chain_query(f: Flavor) -> str:
    """A stored response and those it continues, oldest first, in one query however long the chain."""
    columns = ", ".join(STORED_RESPONSE_COLUMNS)
    joined = ", ".join(f"r.{column}" for column in STORED_RESPONSE_COLUMNS)
    return (
        f"WITH RECURSIVE chain ({columns}, depth) AS ("
        f"SELECT {columns}, 0 FROM stored_responses WHERE id = {f.param(1)} "
        f"UNION ALL SELECT {joined}, chain.depth + 1 FROM stored_responses r "
        f"JOIN chain ON r.id = chain.previous_id WHERE chain.depth + 1 < {f.param(2)}) "
        f"SELECT {columns} FROM chain ORDER BY depth DESC"
    )
