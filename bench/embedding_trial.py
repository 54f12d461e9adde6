"""Does a small static text embedding predict "will the cheap model's answer be good" better than
the hashed word features relaybox uses? A trial of WordLlama (`wordllama` 0.4.0.post1 on PyPI: a
32,000 x 256 token-embedding table, average-pooled, whose weights ship inside the wheel).

    /tmp/wlvenv/bin/python -m bench.embedding_trial [--bootstrap 200] [--runs 2000]

Run it from the repository root in an environment with relaybox, `wordllama==0.4.0.post1` and
numpy (not relaybox's own: wordllama is no dependency of relaybox):

    python3 -m venv /tmp/wlvenv && /tmp/wlvenv/bin/pip install -e . wordllama==0.4.0.post1 numpy

Label: the weak (cheap) model's recorded outcome is good, `feedback(id, False) >= 0.5`. Each prompt
is predicted by a model trained on the other folds only (`routing_replay.folds`: the mixed stream
cross-fitted by conversation, MMLU by whole domains, so the test domains were never seen):
- (a) hashed: `user_features` (relaybox's hashed unigrams and bigrams) into `GoodAnswerModel`, one
  AdaGrad pass in a fixed shuffled order, as `routing_replay.train_priors` trains relaybox's prior;
- (b) embedding: the WordLlama embedding, L2-normalised, of the same text the hashed features read
  (the user messages, head 2,000 + tail 2,000 characters of a long one):
  (b1) as dense slots 0..255 of the same `GoodAnswerModel`, one pass;
  (b2) numpy logistic regression with an L2 penalty on the standardised embedding (Newton steps),
  its penalty chosen from `PENALTIES` by leave-one-fold-out AUC over the training folds alone;
- (c) both: (c1) the hashed and the embedding slots in one `GoodAnswerModel`, one pass; (c2) the
  (b2) regression with (a)'s logit as one more input (stacked: the training rows' logits are out of
  fold, from hashed models trained on the other training folds; in choosing its penalty those
  logits are taken as given, a small leak into that choice only).
On the mixed stream, a reference row that is no router input: the test prompt's domain's good rate on
the training folds (how much of the pooled AUC knowing the topic alone gives).

AUC over all held-out predictions pooled, and the mean of the per-domain AUCs (the domains with at
least `MIN_CLASS` good and `MIN_CLASS` bad answers): can a model tell a hard question from an easy
one within a topic, rather than only the topic? 95% intervals: prompts resampled with replacement,
the same resamples for every method, so differences to (a) are paired.

Timing: the embedding of one prompt as the router would compute it, per call, for the inputs of
`bench/classifier.py` (a 10k-token conversation's and a 10k-token pasted log's head + tail, 4,000
characters), next to relaybox's hashed `features()` on the same text.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from relaybox.protocol.routing import learned

from bench import routing_replay as rr
from bench.classifier import timed
from bench.machine import RESULTS, percentile, write

PENALTIES = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)  # L2 on the summed log loss, standardised inputs
MIN_CLASS = 5  # a domain's AUC counts when it has at least this many good and bad answers
DIM = 256
SETS = ("mixed", "mmlu")


# --- the text and the embedding -------------------------------------------------------------------


def prompt_text(prompt: rr.Prompt) -> str:
    """The text `learned.features` reads: the user messages, head and tail of a long one."""
    text = "\n".join(m.text() for m in prompt.messages if m.role == "user")
    if len(text) > learned.HEAD_CHARS + learned.TAIL_CHARS:
        text = text[: learned.HEAD_CHARS] + "\n" + text[-learned.TAIL_CHARS :]
    return text


def load_wordllama():  # type: ignore[no-untyped-def]
    """The wheel's own weights and tokenizer, never a download. `WordLlama.load()` with no
    arguments looks for the tokenizer in `<package>/tokenizer/` while the wheel ships it in
    `<package>/tokenizers/`, so it misses it and fetches it from Hugging Face; with the package
    folder as `cache_dir` both files resolve inside the wheel, and `disable_download` turns any
    miss into an error rather than a request."""
    import wordllama
    from wordllama import WordLlama

    return WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


# --- learners ------------------------------------------------------------------------------------


def sparse_model(size: int) -> learned.GoodAnswerModel:
    return learned.GoodAnswerModel(weights=array("d", bytes(8 * size)), squares=array("d", bytes(8 * size)))


def train_one_pass(x: Sequence[learned.Features], y: np.ndarray, indices: Sequence[int], size: int):  # type: ignore[no-untyped-def]
    """`GoodAnswerModel`, one pass over `indices` in a fixed shuffled order (as `train_priors`)."""
    model = sparse_model(size)
    order = list(indices)
    random.Random(0).shuffle(order)
    for i in order:
        model.learn(x[i], float(y[i]))
    return model


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def fit_l2(x: np.ndarray, y: np.ndarray, penalty: float, start: np.ndarray | None = None) -> np.ndarray:
    """Logistic regression, L2 penalty on the weights (not the intercept), Newton steps."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    d = xb.shape[1]
    w = np.zeros(d) if start is None else start.copy()
    ridge = np.full(d, penalty)
    ridge[-1] = 1e-8
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        gradient = xb.T @ (p - y) + ridge * w
        hessian = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-7:
            break
    return w


def predict_l2(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def standardiser(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    return lambda z: (z - mean) / std


def chosen_l2(
    x: np.ndarray, y: np.ndarray, train_parts: Sequence[Sequence[int]]
) -> tuple[float, dict[float, float]]:
    """The penalty with the best leave-one-fold-out AUC over the training folds."""
    scores: dict[float, np.ndarray] = {c: np.zeros(len(y)) for c in PENALTIES}
    held = np.concatenate([np.asarray(p) for p in train_parts])
    for k, part in enumerate(train_parts):
        inner = np.concatenate([np.asarray(p) for j, p in enumerate(train_parts) if j != k])
        scale = standardiser(x[inner])
        w = None
        for c in PENALTIES:  # warm start along the path
            w = fit_l2(scale(x[inner]), y[inner], c, w)
            scores[c][np.asarray(part)] = predict_l2(w, scale(x[np.asarray(part)]))
    aucs = {c: auc(s[held], y[held]) for c, s in scores.items()}
    return max(aucs, key=lambda c: aucs[c]), aucs


# --- AUC ----------------------------------------------------------------------------------------


def ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(new)
    edges = np.r_[np.nonzero(new)[0], len(a)]
    out = np.empty(len(a))
    out[order] = 0.5 * (edges[dense] + edges[dense - 1] + 1)
    return out


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks(scores)[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def within(scores: np.ndarray, y: np.ndarray, groups: dict[str, np.ndarray]) -> float:
    """The mean AUC over the domains (`groups`: each one's positions) with enough of each class."""
    values = []
    for rows in groups.values():
        ys = y[rows]
        if ys.sum() >= MIN_CLASS and len(ys) - ys.sum() >= MIN_CLASS:
            values.append(auc(scores[rows], ys))
    return float(np.mean(values)) if values else float("nan")


# --- the trial ----------------------------------------------------------------------------------


def held_out_scores(
    dataset: rr.Dataset,
    hashed: list[learned.Features],
    emb: np.ndarray,
    y: np.ndarray,
    log: Callable[[str], None],
) -> tuple[dict[str, np.ndarray], list[str]]:
    n = len(y)
    parts = rr.folds(dataset)
    names = (
        "a  hashed, GoodAnswerModel",
        "b1 embedding, GoodAnswerModel",
        "b2 embedding, L2 logistic",
        "c1 both, GoodAnswerModel",
        "c2 both, L2 logistic + (a) logit",
    )
    # a reference, not an input a router has: the domain's good rate, where test domains were trained on
    topic = "r  topic only (domain's rate; reference)" if dataset.name == "mixed" else None
    scores = {name: np.zeros(n) for name in (*names, *([topic] if topic else []))}
    dense = [tuple((j, float(v)) for j, v in enumerate(row)) for row in emb]
    offset = 1 << learned.FEATURE_BITS
    both = [h + tuple((offset + j, v) for j, v in d) for h, d in zip(hashed, dense, strict=True)]
    notes = []
    for k, test in enumerate(parts):
        started = time.perf_counter()
        train_parts = [p for j, p in enumerate(parts) if j != k]
        train = [i for p in train_parts for i in p]
        t = np.asarray(test)
        tr = np.asarray(train)
        a = train_one_pass(hashed, y, train, offset)
        b1 = train_one_pass(dense, y, train, DIM)
        c1 = train_one_pass(both, y, train, offset + DIM)
        for i in test:
            scores[names[0]][i] = logit(a.predict(hashed[i]))
            scores[names[1]][i] = logit(b1.predict(dense[i]))
            scores[names[3]][i] = logit(c1.predict(both[i]))
        # (b2): the penalty chosen on the training folds alone
        penalty, inner = chosen_l2(emb, y, train_parts)
        scale = standardiser(emb[tr])
        w = fit_l2(scale(emb[tr]), y[tr], penalty)
        scores[names[2]][t] = predict_l2(w, scale(emb[t]))
        # (c2): the training rows' hashed logits out of fold, the test rows' from (a)
        stacked = np.zeros(n)
        for j, part in enumerate(train_parts):
            others = [i for q, p in enumerate(train_parts) if q != j for i in p]
            inner_model = train_one_pass(hashed, y, others, offset)
            for i in part:
                stacked[i] = logit(inner_model.predict(hashed[i]))
        stacked[t] = scores[names[0]][t]
        with_hashed = np.hstack([emb, stacked[:, None]])
        penalty_c, _ = chosen_l2(with_hashed, y, train_parts)
        scale = standardiser(with_hashed[tr])
        w = fit_l2(scale(with_hashed[tr]), y[tr], penalty_c)
        scores[names[4]][t] = predict_l2(w, scale(with_hashed[t]))
        if topic is not None:  # the test prompts' domain's good rate on the training folds
            rate: dict[str, list[float]] = {}
            for i in train:
                rate.setdefault(dataset.domains[i], []).append(y[i])
            prior = float(y[tr].mean())
            for i in test:
                seen = rate.get(dataset.domains[i])
                scores[topic][i] = logit((sum(seen) + prior) / (len(seen) + 1) if seen else prior)
        notes.append(
            f"fold {k}: {len(test)} held out; (b2) penalty {penalty:g} (inner AUC "
            + ", ".join(f"{c:g}: {v:.3f}" for c, v in inner.items())
            + f"); (c2) penalty {penalty_c:g}"
        )
        log(f"{dataset.key} fold {k} done in {time.perf_counter() - started:.0f} s ({notes[-1]})")
    return scores, notes


def interval(values: Sequence[float]) -> tuple[float, float]:
    v = sorted(x for x in values if not math.isnan(x))
    return v[int(0.025 * (len(v) - 1))], v[math.ceil(0.975 * (len(v) - 1))]


def table(dataset: rr.Dataset, scores: dict[str, np.ndarray], y: np.ndarray, bootstrap: int) -> list[str]:
    groups: dict[str, list[int]] = {}
    for i, domain in enumerate(dataset.domains):
        groups.setdefault(domain, []).append(i)
    group_rows = {d: np.asarray(r) for d, r in groups.items()}
    counted = sum(1 for r in group_rows.values() if MIN_CLASS <= y[r].sum() <= len(r) - MIN_CLASS)
    rng = np.random.default_rng(0)
    n = len(y)
    samples = [rng.integers(0, n, n) for _ in range(bootstrap)]
    # a domain's rows within a resample: position lists per domain, rebuilt per resample
    domain_of = np.asarray([list(groups).index(d) for d in dataset.domains])
    base = next(iter(scores))
    pooled = {m: auc(s, y) for m, s in scores.items()}
    inside = {m: within(s, y, group_rows) for m, s in scores.items()}
    boot_pooled: dict[str, list[float]] = {m: [] for m in scores}
    boot_inside: dict[str, list[float]] = {m: [] for m in scores}
    for sample in samples:
        ys = y[sample]
        rows = {d: np.nonzero(domain_of[sample] == j)[0] for j, d in enumerate(groups)}
        for m, s in scores.items():
            ss = s[sample]
            boot_pooled[m].append(auc(ss, ys))
            boot_inside[m].append(within(ss, ys, rows))
    lines = [
        f"{dataset.name}: {n} prompts, {int(y.sum())} good cheap answers ({y.mean():.1%}), "
        f"{len(groups)} domains, {counted} with >= {MIN_CLASS} good and bad; folds: "
        + ("whole domains" if len(groups) >= 2 * rr.FOLDS and dataset.name != "mixed" else "conversations"),
        "AUC of p(cheap answer good) on held-out folds [95% interval]; vs (a): the paired difference [95%]",
        f"{'method':<42}{'AUC pooled':>22}{'vs (a)':>24}{'mean AUC within domain':>26}{'vs (a)':>24}",
    ]
    for m in scores:
        lo, hi = interval(boot_pooled[m])
        wlo, whi = interval(boot_inside[m])
        if m == base:
            diff = wdiff = ""
        elif m.startswith("r "):  # constant within a domain: its within-domain AUC means nothing
            d = [p - q for p, q in zip(boot_pooled[m], boot_pooled[base], strict=True)]
            dlo, dhi = interval(d)
            diff = f"{pooled[m] - pooled[base]:+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
            lines.append(f"{m:<42}{pooled[m]:>7.3f} [{lo:.3f}, {hi:.3f}]{diff:>24}{'n/a':>11}")
            continue
        else:
            d = [p - q for p, q in zip(boot_pooled[m], boot_pooled[base], strict=True)]
            wd = [p - q for p, q in zip(boot_inside[m], boot_inside[base], strict=True)]
            dlo, dhi = interval(d)
            wdlo, wdhi = interval(wd)
            diff = f"{pooled[m] - pooled[base]:+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
            wdiff = f"{inside[m] - inside[base]:+.3f} [{wdlo:+.3f}, {wdhi:+.3f}]"
        lines.append(
            f"{m:<42}{pooled[m]:>7.3f} [{lo:.3f}, {hi:.3f}]{diff:>24}"
            f"{inside[m]:>11.3f} [{wlo:.3f}, {whi:.3f}]{wdiff:>24}"
        )
    return lines


def timing(wl, runs: int) -> list[str]:  # type: ignore[no-untyped-def]
    from bench.classifier import inputs

    embedding = wl.embedding
    tokenizer = wl.tokenizer
    weights = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)

    def lean(text: str) -> float:  # what relaybox would run: token ids, mean of their rows, a dot
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        v = embedding[ids].mean(axis=0)
        v /= np.linalg.norm(v)
        return float(v @ weights)

    lines = [
        f"microseconds per call, {runs} timed calls after 200 warm-up calls; the text as the router reads it "
        f"(user messages, head {learned.HEAD_CHARS} + tail {learned.TAIL_CHARS} chars)",
        f"{'input':<42}{'chars':>6}{'tokens':>7}  {'step':<44}{'p50':>8}{'p99':>8}",
    ]
    for label, request in inputs():
        text = "\n".join(m.text() for m in request.messages if m.role == "user")
        if len(text) > learned.HEAD_CHARS + learned.TAIL_CHARS:
            text = text[: learned.HEAD_CHARS] + "\n" + text[-learned.TAIL_CHARS :]
        tokens = len(tokenizer.encode(text, add_special_tokens=False).ids)
        user_texts = [m.text() for m in request.messages if m.role == "user"]
        steps: tuple[tuple[str, Callable[[], object]], ...] = (
            ("relaybox's hashed features() (reference)", lambda u=user_texts: learned.features(u)),
            ("wordllama embed(text, norm=True)", lambda t=text: wl.embed(t, norm=True)),
            ("tokenizer.encode alone", lambda t=text: tokenizer.encode(t, add_special_tokens=False)),
            ("tokenizer.encode + mean of rows + dot", lambda t=text: lean(t)),
        )
        for name, call in steps:
            times = [ns / 1000 for ns in timed(call, runs)]
            lines.append(
                f"{label:<42}{len(text):>6}{tokens:>7}  {name:<44}"
                f"{percentile(times, 0.5):>8.1f}{percentile(times, 0.99):>8.1f}"
            )
    return lines


def package_notes() -> str:
    import importlib.metadata

    import wordllama

    folder = Path(wordllama.__file__).parent
    files = sorted(folder.glob("weights/*")) + sorted(folder.glob("tokenizers/*.json"))
    meta = importlib.metadata.metadata("wordllama")
    return (
        f"\n## The package\n\nwordllama {meta['Version']}, licence field: {meta['License'].splitlines()[0]}. "
        "Files the trial loads, all inside the installed wheel: "
        + ", ".join(f"`{f.relative_to(folder.parent)}` ({f.stat().st_size:,} bytes)" for f in files)
        + ". Loaded with `WordLlama.load(cache_dir=<package folder>, disable_download=True)` "
        "(see `load_wordllama`).\n\n"
        "Checked by hand (2026-12-01): the wheel `wordllama-0.4.0.post1-cp311-cp311-manylinux2014_x86_64` is "
        "19,155,170 bytes (the weights 15.2 MB of it compressed; 33 MB installed), and pulls in `tokenizers` "
        "(with `huggingface-hub`), `safetensors`, `requests`, `pydantic`, `toml`. Its only licence file is "
        "MIT (c) 2024 Lee Miller; its README says the l2_supercat weights were trained from the concatenated "
        "token-embedding codebooks of LLaMA 2 70B and Phi-3 medium, and the package carries no Llama 2 "
        "licence text or notice (the weights' Hugging Face model card could not be read from here). "
        "`WordLlama.load()` with no arguments tries to download the tokenizer (it looks in `tokenizer/`, "
        "the wheel has `tokenizers/`) and creates `~/.cache/wordllama`; importing `wordllama` calls "
        "`logging.basicConfig(level=INFO)` on the root logger.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=rr.DATA)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    wl = load_wordllama()
    log(f"wordllama loaded in {time.perf_counter() - started:.2f} s: {wl.embedding.shape}")
    sets = {d.key: d for d in rr.load(args.data)}
    cache_hashed: dict[str, learned.Features] = {}
    cache_emb: dict[str, np.ndarray] = {}
    out = []
    for key in SETS:
        dataset = sets[key]
        missing = [p for p in dataset.prompts if p.id not in cache_emb]
        if missing:
            vectors = wl.embed([prompt_text(p) for p in missing], norm=True)
            for p, v in zip(missing, vectors, strict=True):
                cache_emb[p.id] = v.astype(np.float64)
                cache_hashed[p.id] = rr.user_features(p)
        hashed = [cache_hashed[p.id] for p in dataset.prompts]
        emb = np.stack([cache_emb[p.id] for p in dataset.prompts])
        y = np.asarray([float(dataset.outcomes.feedback(p.id, False) >= 0.5) for p in dataset.prompts])
        scores, notes = held_out_scores(dataset, hashed, emb, y, log)
        lines = table(dataset, scores, y, args.bootstrap)
        out += [*lines, *notes, ""]
        log("\n".join(lines))
    log("timing ...")
    timing_lines = timing(wl, args.runs)
    out += timing_lines
    log("\n".join(timing_lines))
    out.append(
        f"\n(whole run {time.perf_counter() - started:.0f} s; bootstrap {args.bootstrap} resamples of prompts)"
    )
    path = write("embedding_trial", "\n".join(out))
    with path.open("a") as handle:
        handle.write(package_notes())
    log(f"wrote {path.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
