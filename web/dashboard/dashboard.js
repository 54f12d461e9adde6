// relaybox dashboard: reads relaybox's JSON APIs and polls them; charts by plotly.js.
"use strict";

const REFRESH_MS = 5000;
const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#db2777", "#65a30d", "#7c3aed", "#ea580c"];
const state = { days: 7, page: "overview", providers: [], discovery: null, selectedGroup: null, stats: null, expandedReasons: new Set() };
const providerColors = new Map();

// --- small helpers -------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Once client keys exist, the APIs need one: asked for once, kept in this browser.
function withKey(options = {}) {
  const key = localStorage.getItem("relayboxKey");
  return key ? { ...options, headers: { ...(options.headers || {}), authorization: `Bearer ${key}` } } : options;
}

async function api(path, options) {
  const response = await fetch(path, withKey(options));
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) $("#key-form").hidden = false;
  if (!response.ok) throw new Error(body?.error?.message || `${path}: HTTP ${response.status}`);
  return body;
}

function colorOf(provider) {
  if (!providerColors.has(provider)) providerColors.set(provider, PALETTE[providerColors.size % PALETTE.length]);
  return providerColors.get(provider);
}

// Dollars, one format everywhere (cards, tables, charts' axes and hovers, gauges): cents from $1 up;
// below, two significant digits in plain decimals (a cheap call costs $0.0000042, never "$0.00" nor
// "4.2e-6"); under a millionth of a dollar, "<$0.000001"; nothing at all, "$0".
const TINY_USD = 0.000001;
const usdDecimals = (v) => {
  const a = Math.abs(Number(v));
  if (a >= 1) return 2;
  if (a < TINY_USD) return 6;
  return Math.max(2, 1 - Math.floor(Math.log10(Number(a.toPrecision(2)))));
};
const usd = (v) => {
  if (v == null) return "—";
  const n = Number(v);
  if (n === 0) return "$0";
  if (Math.abs(n) < TINY_USD) return n > 0 ? "<$0.000001" : ">-$0.000001";
  const digits = usdDecimals(n);
  const text = Math.abs(n).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return `${n < 0 ? "-" : ""}$${text}`;
};
// The same rules as d3 formats, for plotly: a value (a dial's), and an axis up to `top` (its ticks,
// about a fifth of it apart, to one significant digit: $0.000005, $0.000010, ...).
const usdFormat = (v) => (Number(v) ? `,.${usdDecimals(v)}f` : ",.0f");
const usdAxisFormat = (top) => (top > 0 ? `,.${Math.max(2, -Math.floor(Math.log10(top / 5)))}f` : ",.0f");
const pct = (v) => (v == null ? "—" : `${(v * 100).toFixed(1)}%`);
const num = (v) => (v == null ? "—" : Number(v).toLocaleString());
const ms = (v) => (v == null ? "—" : `${Math.round(v).toLocaleString()} ms`);

const LAYOUT = { margin: { l: 55, r: 15, t: 10, b: 45 }, legend: { orientation: "h", y: -0.2 }, font: { size: 11 } };
const CONFIG = { displayModeBar: false, responsive: true };

function plot(id, traces, layout = {}) {
  const element = document.getElementById(id);
  if (!traces.length) {
    Plotly.purge(element);
    element.innerHTML = '<p class="muted">No requests in this period yet.</p>';
    return;
  }
  if (element.querySelector("p.muted")) element.innerHTML = "";
  Plotly.react(element, traces, { ...LAYOUT, ...layout }, CONFIG);
}

// --- alerts (every page) ---------------------------------------------------------------

async function refreshAlerts() {
  const [providers, budgets, health] = await Promise.all([
    api("/api/providers"),
    api("/api/budget").catch(() => ({ data: [] })),
    fetch("/health", withKey()).then((r) => r.json()),  // 503 when nothing can serve, with the same body
  ]);
  state.providers = providers.data;
  state.discovery = providers.discovery;
  renderSetup();
  const alerts = [];
  const down = providers.data.filter((p) => p.enabled && p.health === "down");
  const serving = providers.data.filter((p) => p.enabled && p.health !== "down" && p.health !== "needs-login");
  for (const p of down) {
    alerts.push(["bad", serving.length
      ? `⚠️ ${p.display_name || p.id} is unreachable. Requests fall back to ${serving.map((s) => s.id).join(", ")}. Check it with Providers → Test connection.`
      : `⚠️ ${p.display_name || p.id} is unreachable and no other provider can take over.`]);
  }
  for (const p of providers.data.filter((p) => p.health === "needs-login")) {
    alerts.push(["bad", p.kind === "claude-cli"
      ? `🔑 The Claude CLI (${p.id}) needs a login: run \`claude\` and type /login, then Test connection.`
      : `🔑 ${p.id} needs a login (${p.kind}).`]);
  }
  for (const b of budgets.data.filter((b) => b.warning)) {
    alerts.push(["warn", `💰 The ${b.period} budget is ${pct(b.used)} spent (${usd(b.spent_usd)} of ${usd(b.limit_usd)}).`]);
  }
  const log = health.storage;
  if (log && (log.up === false || log.journaled > 0)) {
    alerts.push(["warn", `🗄️ The request log cannot reach its ${log.backend} database: ${num(log.buffered)} records buffered in memory, ${num(log.journaled)} journaled to disk, written when it returns.${log.last_error ? ` (${log.last_error})` : ""}`]);
  }
  if (log && (log.dropped > 0 || log.journal_failed)) {
    alerts.push(["bad", `🗄️ Records were lost: ${num(log.dropped)} dropped${log.journal_failed ? ", and the journal could not be written" : ""}. See /health.`]);
  }
  $("#alerts").innerHTML = alerts.map(([kind, text]) => `<div class="alert ${kind}" role="alert">${esc(text)}</div>`).join("");
}

// With no provider active, every page says so first, with what start-up found and what to set
// (the advice `relaybox serve` prints in the console).
function renderSetup() {
  const box = $("#setup");
  box.hidden = state.providers.length > 0;
  if (box.hidden) return;
  const found = state.discovery || { notes: [], example_config: "relaybox.example.toml" };
  box.innerHTML = `<h2>No provider is configured yet</h2>
    <p>Until one is, relaybox answers every model request with a 503. At start-up it looked for each kind of provider:</p>
    <ul>${found.notes.map((note) => `<li>${esc(note)}</li>`).join("")}</ul>
    <p>To add one, do what its line says (set the API key it names in relaybox's environment, install the CLI,
    start Ollama) and restart relaybox; or describe your providers in a TOML file and start
    <code>relaybox serve --config FILE</code> (a commented example: <code>${esc(found.example_config)}</code>).
    <code>relaybox doctor</code> checks each one and says what to fix.</p>`;
}

// --- overview --------------------------------------------------------------------------

function byProvider(rows, x, y) {
  const groups = new Map();
  for (const row of rows) {
    if (!groups.has(row.provider)) groups.set(row.provider, { x: [], y: [] });
    groups.get(row.provider).x.push(row[x]);
    groups.get(row.provider).y.push(Number(row[y]) || 0);
  }
  return [...groups].map(([provider, g]) => ({ type: "bar", name: provider, x: g.x, y: g.y, marker: { color: colorOf(provider) } }));
}

// Cost bars whose hover says each amount as the cards do, on an axis whose ticks follow the same rule.
function costChart(rows, layout) {
  const traces = byProvider(rows, "day", "cost_usd").map((t) => ({ ...t, customdata: t.y.map(usd), hovertemplate: "%{x}: %{customdata}<extra>%{fullData.name}</extra>" }));
  const daily = new Map();
  for (const r of rows) daily.set(r.day, (daily.get(r.day) || 0) + (Number(r.cost_usd) || 0));
  const top = Math.max(0, ...daily.values());
  plot("chart-cost", traces, { ...layout, yaxis: { title: { text: "USD" }, tickprefix: "$", tickformat: usdAxisFormat(top), rangemode: "tozero", automargin: true } });
}

// The overview's cards: what each counts is in its words and its tooltip, and each agrees with the
// charts below it (requests with the volume chart, attempts with the model and success charts).
function kpiCards(s, background) {
  const finished = s.answered + s.failed;
  const purposes = ["judge", "shadow", "tool", "test"].map((purpose) => {
    const calls = background.filter((r) => r.status === purpose || r.status === `${purpose}_failed`).reduce((sum, r) => sum + Number(r.attempts), 0);
    return calls ? `${num(calls)} ${purpose}` : "";
  }).filter(Boolean);
  return [
    {
      label: "Requests", value: num(s.requests), detail: `${num(s.attempts)} attempts, fallbacks included`,
      title: "Clients' requests to models in the period, each counted once however many providers it tried (its attempts: the model chart counts those). Background calls are not requests.",
    },
    {
      label: "Requests answered", value: pct(s.answered_rate), warn: s.failed > 0,
      detail: `${num(s.answered)} of ${num(finished)}${s.failed ? `, ${num(s.failed)} failed` : ""}${s.cancelled ? `, ${num(s.cancelled)} cancelled` : ""}`,
      title: `The share of the period's client requests that got an answer, after fallbacks (per attempt: ${pct(s.success_rate)}, as the success-rate chart counts). `
        + "Requests the client cancelled are left out, and so are background calls. The HTTP errors below are counted apart: a client error such as a 404 on an unknown path never reached a model.",
    },
    {
      label: "Background calls", value: num(s.background_calls),
      detail: purposes.length ? `${purposes.join(" · ")}${s.background_failed ? `; ${num(s.background_failed)} failed` : ""}` : "none",
      title: "relaybox's own calls, which no client made: the learned router's judge and shadow calls, MCP tool calls of a tool loop, connection tests. Neither requests nor failures; their cost is in Cost.",
    },
    { label: "Cost", value: usd(s.cost_usd), detail: "background calls included", title: "What every call in the period cost: clients' attempts and background calls." },
    { label: "Saved vs requested model", value: usd(s.saved_usd), detail: "see What routing saved", title: "What the same tokens would have cost on the model the client named (the method is under What routing saved)." },
    { label: "Providers active", value: num(s.providers_active), detail: "called in the period", title: "Providers that had at least one call in the period." },
    { label: "Cache hit rate", value: pct(s.cache_hit_rate), detail: "of requests", title: "The share of client requests answered from the response cache." },
  ];
}

async function refreshOverview() {
  const [stats, budgets] = await Promise.all([api(`/api/stats?days=${state.days}`), api("/api/budget")]);
  state.stats = stats;
  const s = stats.summary;
  const totals = stats.totals[0] || {};
  $("#kpis").innerHTML = kpiCards(s, stats.background).map((k) => `<div class="kpi${k.warn ? " warn" : ""}" title="${esc(k.title)}">
    <div class="value">${esc(k.value)}</div><div class="label">${esc(k.label)}</div><div class="detail">${esc(k.detail)}</div></div>`).join("");

  // Days are categories: one day of data is one bar labelled with its date, not a time axis
  // stretched around a single instant.
  const outcomes = new Map(stats.outcomes.map((r) => [r.day, r]));
  const background = new Map(stats.volume_by_day.map((r) => [r.day, Number(r.background) || 0]));
  const dayList = [...new Set([...outcomes.keys(), ...background.keys()])].sort();
  const dayCount = dayList.length;
  const pad = Math.max(0, (7 - dayCount) / 2);  // under a week, bars keep a week's width
  const days = { type: "category", title: { text: "day (UTC)" }, range: [-0.5 - pad, dayCount - 0.5 + pad] };
  costChart(stats.cost_by_day, { barmode: "stack", bargap: 0.4, xaxis: days });
  // Requests by the day each began, the Requests card's count; background calls beside them.
  const perDay = (column) => dayList.map((day) => Number(outcomes.get(day)?.[column]) || 0);
  plot("chart-volume", dayCount ? [
    { type: "bar", name: "requests", x: dayList, y: perDay("requests"), marker: { color: "#93c5fd" } },
    { type: "scatter", mode: "lines+markers", name: "answered", x: dayList, y: perDay("answered"), line: { color: "#15803d" } },
    ...([...background.values()].some(Boolean) ? [{ type: "bar", name: "background calls", x: dayList, y: dayList.map((day) => background.get(day) || 0), marker: { color: "#d1d5db" } }] : []),
  ] : [], { bargap: 0.4, xaxis: { ...days, title: undefined }, yaxis: { title: { text: "per day" } } });
  plot("chart-models", byProvider(stats.models.map((r) => ({ ...r, label: `${r.provider} / ${r.model}` })), "label", "attempts"),
    { barmode: "group", yaxis: { title: { text: "attempts" } }, xaxis: { automargin: true } });
  plot("chart-latency", stats.providers.length ? [
    { type: "bar", name: "average latency", x: stats.providers.map((r) => r.provider), y: stats.providers.map((r) => r.avg_latency_ms), marker: { color: "#60a5fa" } },
    { type: "bar", name: "average time to first token", x: stats.providers.map((r) => r.provider), y: stats.providers.map((r) => r.avg_ttft_ms), marker: { color: "#f59e0b" } },
  ] : [], { barmode: "group", yaxis: { title: { text: "milliseconds" }, ticksuffix: " ms" } });
  renderSuccess(stats.success_rates);

  $("#savings").innerHTML = `
    <div class="kpi"><div class="value">${esc(usd(s.saved_usd))}</div><div class="label">saved in ${esc(state.days === 1 ? "today" : `${state.days} days`)}, on ${esc(usd(s.cost_usd))} spent</div></div>
    <p class="muted">Method: every answered attempt is priced twice: at what the model that answered cost
    (its tokens at configured prices, else the genai-prices table; subscription CLIs and local models cost $0),
    and at what the same tokens would have cost without routing: on the model the client named or, for
    <code>auto</code>, a route or <code>default</code>, on ${s.savings_baseline ? `<code>${esc(s.savings_baseline)}</code>` : "the costliest paid model (none is configured, so these add nothing)"}
    (<code>[routing] savings_baseline</code>). The difference, summed, is what routing saved. A request naming
    a subscription CLI's model has no price to compare with and adds nothing.</p>`;
  const tokensSaved = stats.volume_by_day.reduce((sum, r) => sum + (Number(r.tokens_saved) || 0), 0);
  const cacheHits = stats.volume_by_day.reduce((sum, r) => sum + (Number(r.cache_hits) || 0), 0);
  const live = stats.response_cache;
  const liveLine = live ? (live.max_bytes > 0
    ? `${num(live.entries)} answers, ${(live.bytes / 1048576).toFixed(1)} of ${(live.max_bytes / 1048576).toFixed(0)} MB; ${num(live.hits)} hits, ${num(live.misses)} misses since start`
    : "off ([cache] max_mb = 0)") : "—";
  $("#cache").innerHTML = `<dl class="card">
    <dt>Cache hits</dt><dd>${esc(num(cacheHits))} (${esc(pct(s.cache_hit_rate))} of requests)</dd>
    <dt>Response cache now</dt><dd>${esc(liveLine)}</dd>
    <dt>Tokens saved by compression</dt><dd>${esc(num(tokensSaved))}</dd>
    <dt>Tokens in / out</dt><dd>${esc(num(totals.tokens_in))} / ${esc(num(totals.tokens_out))}</dd></dl>`;

  // A dial only where there is a limit to measure against; without one, what was spent, in words.
  const limited = budgets.data.filter((b) => b.enabled && b.limit_usd);
  const gauges = limited.map((b, i) => ({
    type: "indicator", mode: "gauge+number", value: b.spent_usd,
    number: { prefix: "$", valueformat: usdFormat(b.spent_usd) },
    title: { text: `${b.period}: of ${usd(b.limit_usd)}`, font: { size: 12 } },
    domain: { row: 0, column: i },
    gauge: {
      axis: { range: [0, b.limit_usd], tickprefix: "$", tickformat: usdAxisFormat(b.limit_usd) },
      bar: { color: b.warning ? "#b91c1c" : "#2563eb" },
      threshold: { line: { color: "#d97706", width: 3 }, value: 0.8 * b.limit_usd },
    },
  }));
  const unlimited = budgets.data.filter((b) => !(b.enabled && b.limit_usd));
  $("#budgets-unlimited").innerHTML = unlimited.length
    ? `<p class="muted">${unlimited.map((b) => `${esc(b.period)}: ${esc(usd(b.spent_usd))} spent, no limit set`).join(" · ")} (<code>PUT /api/budget</code> sets one).</p>`
    : "";
  const budgetChart = document.getElementById("chart-budgets");
  budgetChart.hidden = !gauges.length;
  if (gauges.length) plot("chart-budgets", gauges, { grid: { rows: 1, columns: gauges.length }, margin: { l: 30, r: 30, t: 60, b: 10 } });
  renderHttpErrors(stats.http_errors || []);
  renderKeys(stats.keys || []);
  renderLearning(stats.learned_routing, stats.learning_spend || [], s.cost_usd);
  renderPromise(stats.learned_routing, stats.promise_by_day || [], stats.learning_by_day || []);
}

// What a 4xx says about the request as the client sent it (a 5xx is relaybox failing to answer).
const CLIENT_ERRORS = {
  400: "a malformed request", 401: "no key, or a wrong one", 403: "a key not allowed to do this",
  404: "something it names does not exist (a model, a provider, a task id)", 405: "a method the path does not take", 413: "a body over the size limit",
  429: "a limit reached: a key's, a budget's, or every provider's", 499: "the client left before the answer",
};

// Each HTTP error by what it says: the client's request as sent (4xx; a probe of a path relaybox
// does not serve is a 404), relaybox not ready (`/health` says 503 while no provider can serve:
// the dashboard's own polling gets it too), or relaybox failing to answer (any other 5xx).
function errorKind(e) {
  if (e.status < 500) {
    const why = e.route === "(no route)" && e.status === 404 ? "a path relaybox does not serve" : CLIENT_ERRORS[e.status] || "refused as sent";
    return { name: "client error", className: "status-client", why };
  }
  if (e.route === "/health") return { name: "not ready", className: "status-client", why: "no provider could serve then" };
  return { name: "failed", className: "status-failed", why: "relaybox could not answer" };
}

function renderHttpErrors(errors) {
  // The 4xx and 5xx of every path, model calls or not: what a client got that the request log cannot show.
  const totals = new Map();
  for (const e of errors) totals.set(errorKind(e).name, (totals.get(errorKind(e).name) || 0) + e.count);
  $("#http-errors").innerHTML = errors.length
    ? `<p class="summary">${esc([...totals].map(([name, count]) => `${name}: ${num(count)}`).join(" · "))}</p>
       <div class="scroll"><table><thead><tr><th>route</th><th>status</th><th>kind</th><th>count</th></tr></thead><tbody>${errors.map((e) => {
         const kind = errorKind(e);
         return `<tr><td><code>${esc(e.route)}</code></td><td>${esc(String(e.status))}</td>
           <td><span class="${kind.className}">${esc(kind.name)}</span> <span class="muted">${esc(kind.why)}</span></td><td>${esc(num(e.count))}</td></tr>`;
       }).join("")}</tbody></table></div>
       <p class="muted">Since relaybox started, not over the period. A client error answers a request as it was sent
       (an unknown path, a malformed body, a missing key, a limit reached); most never reach a model, so they are
       not among the requests above. A failure is relaybox not answering: a model request that reached a provider
       is also among the failed requests above. Each has a line in relaybox's console (the access log) and a count
       in <code>/metrics</code>.</p>`
    : '<p class="muted">None since relaybox started.</p>';
}

function renderPromise(learned, byDay, learningByDay) {
  // The promise, what it kept now (this process's window) and day by day (every instance's
  // comparisons, through each day), with what the comparisons and judging cost each day beside.
  const kept = learned && learned.quality_kept;
  const chart = document.getElementById("chart-promise");
  if (!kept) {
    chart.hidden = true;
    $("#promise").innerHTML = `<p class="muted">No promise (<code>[routing] quality_kept = "off"</code>${learned && !learned.enabled ? ", <code>learned = false</code>" : ""}): <code>auto</code> is not measured against one.</p>`;
    return;
  }
  const interval = (e) => (e.estimate == null ? "not yet measured" : `${e.estimate.toFixed(2)} [${e.low.toFixed(2)}, ${e.high.toFixed(2)}]`);
  $("#promise").innerHTML = `<dl class="card">
    <dt>Promised</dt><dd>keep ${esc(pct(kept.promised))} of what the strongest model adds</dd>
    <dt>Kept now</dt><dd>${esc(interval(kept))}, from ${esc(num(kept.comparisons))} blind comparisons (95% interval)</dd>
    <dt>Sent to the strongest model</dt><dd>${esc(pct(kept.strong_share))} of the answers the promise decided</dd></dl>
    ${kept.estimate != null && kept.low < kept.promised ? `<p class="status-failed">The interval reaches below the promise: more goes to the strongest model until it does not.</p>` : ""}`;
  const learning = new Map(learningByDay.map((r) => [r.day, r]));
  const dayList = [...new Set([...byDay.map((r) => r.day), ...learning.keys()])].sort();
  chart.hidden = !dayList.length;
  if (!dayList.length) return;
  const through = new Map(byDay.map((r) => [r.day, r.through_day]));
  const measured = dayList.filter((day) => through.get(day)?.estimate != null);
  const share = (day) => {
    const r = learning.get(day);
    return r && Number(r.cost_usd) ? Number(r.learning_usd) / Number(r.cost_usd) : 0;
  };
  // The cost bars on the primary axis (at the right) so the estimate, on the overlaying axis at
  // the left, is drawn over them.
  const pad = Math.max(0, (7 - dayList.length) / 2);
  plot("chart-promise", [
    { type: "bar", name: "learning cost (share of the day's spending)", x: dayList, y: dayList.map(share), marker: { color: "#e5e7eb" } },
    {
      type: "scatter", mode: "lines+markers", name: "kept, through the day (95% interval)", x: measured, yaxis: "y2",
      y: measured.map((day) => through.get(day).estimate),
      error_y: { type: "data", symmetric: false, array: measured.map((day) => through.get(day).high - through.get(day).estimate), arrayminus: measured.map((day) => through.get(day).estimate - through.get(day).low) },
      line: { color: "#15803d" },
    },
    { type: "scatter", mode: "lines", name: "promised", x: dayList, y: dayList.map(() => kept.promised), yaxis: "y2", line: { color: "#d97706", dash: "dash" } },
  ], {
    bargap: 0.6,
    margin: { ...LAYOUT.margin, r: 70 },
    xaxis: { type: "category", range: [-0.5 - pad, dayList.length - 0.5 + pad] },
    yaxis: { title: { text: "learning cost" }, side: "right", tickformat: ".0%", rangemode: "tozero", showgrid: false },
    yaxis2: { title: { text: "share of the advantage kept" }, overlaying: "y", side: "left", rangemode: "tozero", tickmode: "auto", dtick: 0.2, tickformat: ".1f" },
  });
}

function renderLearning(learned, spend, totalCost) {
  // Shadow answers and a judge's verdicts: what they cost over the period, and the labels they gave.
  if (!learned || !learned.enabled) {
    $("#learning").innerHTML = `<p class="muted">Off (<code>[routing] learned = false</code>): the classifier's tiers decide <code>auto</code>.</p>`;
    return;
  }
  const cost = spend.reduce((sum, r) => sum + (Number(r.cost_usd) || 0), 0);
  const calls = spend.reduce((sum, r) => sum + (Number(r.attempts) || 0), 0);
  const models = [...new Set([...Object.keys(learned.labels), ...Object.keys(learned.verdicts)])].sort();
  const rows = models.map((m) => {
    const v = learned.verdicts[m] || { good: 0, bad: 0 };
    return `<tr><td><code>${esc(m)}</code></td><td>${esc(num(learned.labels[m] || 0))}</td><td>${esc(num(v.good))}</td><td>${esc(num(v.bad))}</td></tr>`;
  }).join("");
  $("#learning").innerHTML = `<dl class="card">
    <dt>Shadow answers and judging</dt><dd>${esc(num(calls))} calls, ${esc(usd(cost))}${totalCost ? ` (${esc(pct(cost / totalCost))} of all spending)` : ""}</dd></dl>
    <table><thead><tr><th>model</th><th>labels learned</th><th>judged good</th><th>judged bad</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="4" class="muted">no labels yet</td></tr>`}</tbody></table>
    <p class="muted">Labels learned count the model's own (a poor score, a judge's verdict) and those other
    instances on this database learned, since this process started; verdicts are this process's.</p>`;
}

function renderKeys(keys) {
  // Shown once client keys exist: each key's use over the period, its limits and its own budget.
  $("#keys-panel").hidden = !keys.length;
  const head = ["key", "role", "requests", "tokens in/out", "cost", "limits", "budget"];
  $("#keys-table").innerHTML = `<thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>` + keys.map((k) => {
    const limits = [k.rpm ? `${num(k.rpm)} req/min` : "", k.tpm ? `${num(k.tpm)} tok/min` : ""].filter(Boolean).join(", ") || "none";
    const budget = k.budget
      ? `<span class="${k.budget.used >= 0.8 ? "status-failed" : ""}">${esc(usd(k.budget.spent_usd))} of ${esc(usd(k.budget.limit_usd))} ${esc(k.budget.period)} (${esc(pct(k.budget.used))})</span>`
      : "none";
    return `<tr data-key="${esc(k.key)}"><td><code>${esc(k.key)}</code> <span class="muted">${esc(k.prefix)}…</span></td>
      <td>${k.admin ? "admin" : "client"}</td><td>${esc(num(k.requests))}</td>
      <td>${esc(num(k.tokens_in))} / ${esc(num(k.tokens_out))}</td><td>${esc(usd(k.cost_usd))}</td>
      <td>${esc(limits)}</td><td>${budget}</td></tr>`;
  }).join("") + "</tbody>";
}

function renderSuccess(rows) {
  const select = $("#category-filter");
  const categories = [...new Set(rows.map((r) => r.category))].sort();
  const chosen = select.value;
  select.innerHTML = '<option value="">all</option>' + categories.map((c) => `<option ${c === chosen ? "selected" : ""}>${esc(c)}</option>`).join("");
  const groups = new Map();
  for (const r of rows.filter((r) => !chosen || r.category === chosen)) {
    const key = `${r.provider} / ${r.model}`;
    const g = groups.get(key) || { provider: r.provider, attempts: 0, successes: 0 };
    g.attempts += Number(r.attempts) || 0;
    g.successes += Number(r.successes) || 0;
    groups.set(key, g);
  }
  const entries = [...groups].filter(([, g]) => g.attempts > 0);
  plot("chart-success", entries.length ? [{
    type: "bar", x: entries.map(([k]) => k), y: entries.map(([, g]) => (100 * g.successes) / g.attempts),
    text: entries.map(([, g]) => `${g.successes}/${g.attempts}`), marker: { color: entries.map(([, g]) => colorOf(g.provider)) },
  }] : [], { yaxis: { title: { text: "% of attempts answered" }, range: [0, 100] }, xaxis: { automargin: true } });
}

// --- providers -------------------------------------------------------------------------

const BADGES = { local: "🏠 Local (free)", subscription: "🔗 Subscription CLI" };
const HEALTH = { healthy: "🟢 Connected", degraded: "🟡 Degraded", down: "🔴 Offline", "needs-login": "🔑 Needs login" };

function badge(p) {
  if (BADGES[p.billing]) return BADGES[p.billing];
  return p.reference_cost_usd == null ? "☁️ Paid API" : `☁️ Paid API (from ${usd(p.reference_cost_usd)} per 2k-in/500-out request)`;
}

async function refreshProviders() {
  const [providers, models] = await Promise.all([api("/api/providers"), api("/v1/models")]);
  state.providers = providers.data;
  const container = $("#provider-cards");
  for (const p of providers.data) {
    let card = container.querySelector(`[data-provider="${CSS.escape(p.id)}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "card";
      card.dataset.provider = p.id;
      card.innerHTML = `<h3><span>${esc(p.display_name || p.id)}</span><span class="badge"></span></h3>
        <dl></dl><div class="sparkline"></div>
        <div class="toolbar">
          <label><input type="checkbox" class="enabled"> enabled</label>
          <label>priority <input type="number" class="priority" style="width:4rem"></label>
          <button class="test">Test connection</button>
        </div><div class="diagnosis" hidden></div>`;
      card.querySelector(".enabled").addEventListener("change", (e) => saveProvider(p.id, { enabled: e.target.checked }));
      card.querySelector(".priority").addEventListener("change", (e) => saveProvider(p.id, { priority: parseInt(e.target.value, 10) || 0 }));
      card.querySelector(".test").addEventListener("click", () => testProvider(p.id, card));
      container.appendChild(card);
    }
    card.querySelector(".badge").textContent = badge(p);
    const breaker = p.breaker || {};
    card.querySelector("dl").innerHTML = [
      ["Health", HEALTH[p.health] || p.health],
      ["Kind", p.kind],
      ["Breaker", breaker.state + (breaker.cooldown_remaining_s ? ` (${Math.ceil(breaker.cooldown_remaining_s)} s)` : "")],
      ["In flight", p.in_flight],
      ["Models", p.models.join(", ")],
      ["Last failure", p.last_failure || "—"],
    ].map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
    const enabled = card.querySelector(".enabled");
    if (document.activeElement !== enabled) enabled.checked = p.enabled;
    const priority = card.querySelector(".priority");
    if (document.activeElement !== priority) priority.value = p.priority;
    api(`/api/requests?provider=${encodeURIComponent(p.id)}&limit=30`).then((recent) => {
      const rows = recent.data.slice().reverse();
      plot(card.querySelector(".sparkline").id || (card.querySelector(".sparkline").id = `spark-${p.id}`),
        rows.length ? [{ type: "scatter", mode: "lines", y: rows.map((r) => r.latency_ms), line: { color: colorOf(p.id), width: 1.5 }, hovertemplate: "%{y} ms<extra></extra>" }] : [],
        { margin: { l: 30, r: 5, t: 5, b: 5 }, xaxis: { visible: false }, yaxis: { tickfont: { size: 9 } }, showlegend: false });
    });
  }
  $("#discovery-notes").innerHTML = (state.discovery?.notes || []).map((note) => `<li>${esc(note)}</li>`).join("");
  const routes = models.data.filter((m) => m.relaybox?.kind === "route").map((m) => ({ id: m.id, chain: m.relaybox.chain }));
  const width = Math.max(1, ...routes.map((r) => r.chain.length));
  const headings = ["route", "primary", ...Array.from({ length: width - 1 }, (_, i) => `backup ${i + 1}`)];
  $("#routing-matrix").innerHTML = `<thead><tr>${headings.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>` +
    routes.map((r) => `<tr><td>${esc(r.id)}</td>${Array.from({ length: width }, (_, i) => `<td>${esc(r.chain[i] ?? "")}</td>`).join("")}</tr>`).join("") + "</tbody>";
}

async function saveProvider(id, change) {
  await api(`/api/providers/${encodeURIComponent(id)}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(change) });
  await refreshProviders();
}

async function testProvider(id, card) {
  const box = card.querySelector(".diagnosis");
  box.hidden = false;
  box.className = "diagnosis";
  box.textContent = "Testing…";
  try {
    const result = await api(`/api/providers/${encodeURIComponent(id)}/test`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    box.className = `diagnosis ${result.ok ? "ok" : "bad"}`;
    box.textContent = result.ok ? result.diagnosis : `${result.diagnosis}\n${result.detail}`;
  } catch (error) {
    box.className = "diagnosis bad";
    box.textContent = `❌ ${error.message}`;
  }
}

// --- requests --------------------------------------------------------------------------

// relaybox's own calls, recorded with their purpose as status (`judge`, or `judge_failed`): labelled
// for what they are, never drawn as a client's failure.
const BACKGROUND = {
  judge: "a judge model's verdict on an answer, for the learned router (background)",
  shadow: "a second model's answer to the same prompt, for the learned router to compare (background)",
  tool: "an MCP tool call of a tool loop",
  test: "a connection test (relaybox doctor, or Test connection)",
};

function statusLabel(status) {
  if (status === "success" || status === "deduplicated") return `<span class="status-answered">${esc(status)}</span>`;
  if (status === "cancelled") return '<span class="status-cancelled" title="the client left before the answer">cancelled</span>';
  const failed = status.endsWith("_failed");
  const purpose = failed ? status.slice(0, -"_failed".length) : status;
  if (BACKGROUND[purpose]) {
    return `<span class="badge background" title="${esc(BACKGROUND[purpose])}">${esc(purpose)}</span>${failed ? ' <span class="status-background-failed">failed</span>' : ""}`;
  }
  return `<span class="status-failed">${esc(status)}</span>`;
}

// A router reason on one line, cut with an ellipsis where it is long; a click (or Enter) shows it whole.
function reasonCell(record) {
  const open = state.expandedReasons.has(record.id);
  return `<button type="button" class="reason${open ? " expanded" : ""}" data-reason="${esc(record.id)}" aria-expanded="${open}" title="${esc(record.router_reason)}">${esc(record.router_reason || "")}</button>`;
}

async function refreshRequests() {
  const select = $("#filter-provider");
  const chosen = select.value;
  select.innerHTML = '<option value="">all</option>' + state.providers.map((p) => `<option ${p.id === chosen ? "selected" : ""}>${esc(p.id)}</option>`).join("");
  const query = new URLSearchParams({ limit: "100" });
  for (const [key, id] of [["provider", "#filter-provider"], ["model", "#filter-model"], ["category", "#filter-category"], ["status", "#filter-status"]]) {
    if ($(id).value.trim()) query.set(key, $(id).value.trim());
  }
  const rows = (await api(`/api/requests?${query}`)).data;
  const head = ["time", "provider", "model", "category", "status", "router reason", "tokens in/out", "cost", "latency", "TTFT"];
  $("#requests-table").innerHTML = `<thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>` + (rows.length ? rows.map((r) => `
    <tr class="clickable ${r.request_group_id === state.selectedGroup ? "selected" : ""}" data-group="${esc(r.request_group_id)}">
      <td>${esc(new Date(r.created_at * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }))}</td>
      <td>${esc(r.provider)}${r.fallback_used ? ' <span class="fallback" title="fallback was used">⚡</span>' : ""}</td>
      <td>${esc(r.model_selected)}</td><td>${esc(r.task_category)}</td>
      <td class="status" data-status="${esc(r.status)}">${statusLabel(r.status)}</td>
      <td>${reasonCell(r)}</td>
      <td>${num(r.tokens_in)} / ${num(r.tokens_out)}</td><td>${usd(r.cost_usd)}</td>
      <td>${ms(r.latency_ms)}</td><td>${ms(r.ttft_ms)}</td></tr>`).join("") : `<tr><td colspan="${head.length}" class="muted">No requests match.</td></tr>`) + "</tbody>";
  if (state.selectedGroup) await showAttempts(state.selectedGroup);
}

async function showAttempts(group) {
  state.selectedGroup = group;
  const attempts = (await api(`/api/requests?group=${encodeURIComponent(group)}&limit=20`)).data.sort((a, b) => a.attempt - b.attempt);
  const detail = $("#request-detail");
  detail.hidden = false;
  const rated = attempts.find((a) => a.user_rating != null)?.user_rating;
  detail.innerHTML = `<h2>Request ${esc(group)}: ${attempts.length} attempt(s)</h2>
    <table><thead><tr><th>#</th><th>provider</th><th>model</th><th>status</th><th>reason</th><th>error</th><th>heuristic</th></tr></thead><tbody>
    ${attempts.map((a) => `<tr><td>${a.attempt}</td><td>${esc(a.provider)}</td><td>${esc(a.model_selected)}</td><td>${statusLabel(a.status)}</td>
      <td class="wrap">${esc(a.router_reason)}</td><td class="wrap">${esc(a.error_message || "")}</td><td>${esc(a.heuristic_score ?? "—")}</td></tr>`).join("")}</tbody></table>
    <p class="muted">${esc(attempts[0]?.prompt_summary || "")}</p>
    <div class="rating">Rate this answer: ${[1, 2, 3, 4, 5].map((n) => `<button data-rating="${n}" class="${rated === n ? "active" : ""}">${n}</button>`).join(" ")}
    <span id="rating-result" class="muted"></span></div>`;
  for (const button of detail.querySelectorAll("[data-rating]")) {
    button.addEventListener("click", async () => {
      try {
        await api("/api/feedback", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ taskId: group.replaceAll("-", ""), rating: Number(button.dataset.rating) }) });
        $("#rating-result").textContent = `rated ${button.dataset.rating}`;
        await showAttempts(group);
      } catch (error) {
        $("#rating-result").textContent = error.message;
      }
    });
  }
}

// --- actors ----------------------------------------------------------------------------

function actorNode(node) {
  const mailbox = node.mailbox ? `${node.mailbox.depth}/${node.mailbox.capacity}` : "—";
  const facts = [
    ["state", `<span class="state-${esc(node.state || "running")}">${esc(node.state || "running")}</span>`],
    ["mailbox", esc(mailbox)],
    ["in flight", esc(node.in_flight ?? "—")],
    ["breaker", esc(node.breaker?.state ?? "—")],
    ["restarts", esc(node.restarts ?? 0)],
  ];
  const details = actorDetails(node);
  const detailLine = details.length ? `<div class="muted">${details.map(([k, v]) => `${esc(k)}: ${esc(v)}`).join(" · ")}</div>` : "";
  const crash = node.last_crash ? `<div class="muted">last crash ${esc(Math.round(node.last_crash.seconds_ago))} s ago: ${esc(node.last_crash.reason)}</div>` : "";
  const children = node.children?.length ? `<ul>${node.children.map((c) => `<li>${actorNode(c)}</li>`).join("")}</ul>` : "";
  return `<div class="actor"><strong>${esc(node.name)}</strong> <span class="muted">${esc(node.kind)}</span> · ${facts.map(([k, v]) => `${k}: ${v}`).join(" · ")}${detailLine}${crash}</div>${children}`;
}

// What each kind of actor says about itself in /actors, beyond the common facts.
function actorDetails(node) {
  if (node.kind === "provider") {
    const pool = node.transport?.warm_pool;
    return [
      ["health", HEALTH[node.health] || node.health],
      ["slots", node.concurrency_limit],
      ["completed", num(node.completed)],
      ["failed", num(node.failed)],
      ...(pool ? [["warm pool", `${pool.idle} ready of ${pool.size}, ${pool.hits} hits, ${pool.misses} misses`]] : []),
      ...(node.last_failure ? [["last failure", node.last_failure]] : []),
    ];
  }
  if (node.kind === "recorder") {
    return [["storage", `${node.storage} ${node.storage_up === false ? "unreachable" : "up"}`], ["written", num(node.written)],
      ["buffered", num(node.buffered)], ["journaled", num(node.journaled)], ["dropped", num(node.dropped)]];
  }
  if (node.kind === "budget") return [["pressure", pct(node.pressure)], ["refused", num(node.refused)], ["unchecked", num(node.unchecked)]];
  if (node.kind === "router") return [["mode", node.mode], ["evidence loaded", node.evidence_loaded_at == null ? "not yet" : "yes"]];
  return [];
}

async function refreshActors() {
  const tree = await api("/actors");
  $("#actor-tree").innerHTML = `<p class="muted">process ${esc(tree.pid)}, worker ${esc(tree.worker)}</p><div class="tree">${actorNode(tree.supervisor)}</div>`;
}

// --- navigation and polling ----------------------------------------------------------------

const PAGES = { overview: refreshOverview, providers: refreshProviders, requests: refreshRequests, actors: refreshActors };

async function refresh() {
  // Alerts first (they also load the provider list the pages use); a failing step (say, the
  // database is down) leaves the others working and is said at the top.
  const problems = [];
  for (const step of [refreshAlerts, PAGES[state.page]]) {
    try {
      await step();
    } catch (error) {
      problems.push(error.message === "Failed to fetch" ? "cannot reach relaybox" : error.message);
    }
  }
  $("#updated").textContent = problems.length ? `⚠️ ${problems.join("; ")}` : `updated ${new Date().toLocaleTimeString()}`;
}

function show(page) {
  state.page = PAGES[page] ? page : "overview";
  for (const section of document.querySelectorAll(".page")) section.classList.toggle("active", section.id === `page-${state.page}`);
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === state.page);
  refresh().then(() => window.dispatchEvent(new Event("resize")));
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("[data-days]")) {
    button.addEventListener("click", () => {
      state.days = Number(button.dataset.days);
      for (const b of document.querySelectorAll("[data-days]")) b.classList.toggle("active", b === button);
      refresh();
    });
  }
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem("relayboxKey", $("#key-input").value.trim());
    $("#key-form").hidden = true;
    refresh();
  });
  $("#category-filter").addEventListener("change", () => state.stats && renderSuccess(state.stats.success_rates));
  for (const id of ["#filter-provider", "#filter-model", "#filter-category", "#filter-status"]) $(id).addEventListener("change", refreshRequests);
  $("#requests-table").addEventListener("click", (event) => {
    const reason = event.target.closest("[data-reason]");
    if (reason) {
      const id = reason.dataset.reason;
      if (!state.expandedReasons.delete(id)) state.expandedReasons.add(id);
      reason.classList.toggle("expanded", state.expandedReasons.has(id));
      reason.setAttribute("aria-expanded", String(state.expandedReasons.has(id)));
      return;
    }
    const row = event.target.closest("tr[data-group]");
    if (row) showAttempts(row.dataset.group).then(() => $("#request-detail").scrollIntoView({ block: "nearest" })).then(refreshRequests);
  });
  show(location.hash.slice(1) || "overview");
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
});
