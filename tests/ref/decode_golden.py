#!/usr/bin/python3
"""kiln's independent reference for the logits processors of the decoding layer.

Each processor is written here in numpy, in float64, from its documented semantics (Hugging Face
transformers' LogitsProcessor classes, OpenAI's presence/frequency penalties), not from kiln's C code.
kiln's documented tie rule is used where HF leaves ties to torch.sort: tokens rank by larger value, then
lower id. A cumulative probability within DECODE_MASS_SLACK (relative) of a top-p or typical-p
threshold counts as reaching it. Random cases are redrawn when a decision falls within 1e-4 of a
threshold, so that float32 rounding in kiln cannot flip it; the designed edge cases sit exactly on
thresholds only where the slack makes the answer certain.

Writes tests/golden/decode_processors.txt, one case per five lines:
    case NAME N_VOCAB SAMPLING
    params KEY=VALUE ...         (samplers=..., stop=1,2, bias=3:-1.5,4:-inf, ban=5,6)
    tokens N_PROMPT T0 T1 ...    (the sequence so far: prompt, then generated tokens)
    logits V0 V1 ...             (float32 values, 9 significant digits)
    expect V0 V1 ...             (after the chain; -inf for removed tokens)

Usage: /usr/bin/python3 tests/ref/decode_golden.py     (same file every run: seeds are fixed)
"""
import os
import sys

import numpy as np

SLACK = 1e-6
MARGIN = 1e-4
NEG = -np.inf


def order(x):
    """Token ids by larger value first, then lower id."""
    return sorted(range(len(x)), key=lambda i: (-x[i], i))


def softmax(x):
    finite = np.isfinite(x)
    p = np.zeros_like(x)
    if finite.any():
        m = x[finite].max()
        p[finite] = np.exp(x[finite] - m)
        p /= p.sum()
    return p


class Near(Exception):
    """A decision fell too close to a threshold for a random case."""


def check_margin(a, b, strict):
    if strict and abs(a - b) <= MARGIN * max(abs(b), 1e-30):
        raise Near()


# ---- processors: (params, tokens, n_prompt, stop, x, strict) -> x ----

def temperature(P, toks, n_prompt, stop, x, strict):
    return x / P["temperature"]


def top_k(P, toks, n_prompt, stop, x, strict):
    k = max(P["top_k"], P.get("min_keep", 1))
    if k >= len(x):
        return x
    kth = sorted(x, reverse=True)[k - 1]
    return np.where(x < kth, NEG, x)


def top_p(P, toks, n_prompt, stop, x, strict):
    p = softmax(x)
    keep_min = P.get("min_keep", 1)
    out = np.full_like(x, NEG)
    before = 0.0
    target = P["top_p"] * (1 - SLACK)
    for rank, i in enumerate(order(x)):
        if not np.isfinite(x[i]):
            break
        check_margin(before, P["top_p"], strict)
        if before < target or rank < keep_min:
            out[i] = x[i]
        before += p[i]
    return out


def min_p(P, toks, n_prompt, stop, x, strict):
    p = softmax(x)
    top = p.max()
    keep_min = P.get("min_keep", 1)
    out = np.full_like(x, NEG)
    for rank, i in enumerate(order(x)):
        if not np.isfinite(x[i]):
            break
        check_margin(p[i], P["min_p"] * top, strict)
        if p[i] >= P["min_p"] * top or rank < keep_min:
            out[i] = x[i]
    return out


def typical_p(P, toks, n_prompt, stop, x, strict):
    p = softmax(x)
    finite = np.isfinite(x)
    logp = np.full_like(x, NEG)
    logp[finite] = np.log(p[finite])
    ent = -(p[finite] * logp[finite]).sum()
    shifted = np.full_like(x, np.inf)
    shifted[finite] = np.abs(-logp[finite] - ent)
    ids = sorted([i for i in range(len(x)) if finite[i]], key=lambda i: (shifted[i], i))
    target = P["typical_p"] * (1 - SLACK)
    before, crossing = 0.0, None
    for i in ids:
        check_margin(before, P["typical_p"], strict)
        if before >= target:
            break
        crossing = i
        before += p[i]
    keep = set(i for i in ids if shifted[i] <= shifted[crossing]) if crossing is not None else set()
    keep |= set(ids[: P.get("min_keep", 1)])
    out = np.full_like(x, NEG)
    for i in keep:
        out[i] = x[i]
    return out


def repetition_penalty(P, toks, n_prompt, stop, x, strict):
    x = x.copy()
    for t in set(toks):
        x[t] = x[t] * P["repetition_penalty"] if x[t] < 0 else x[t] / P["repetition_penalty"]
    return x


def presence_penalty(P, toks, n_prompt, stop, x, strict):
    x = x.copy()
    for t in set(toks[n_prompt:]):
        x[t] -= P["presence_penalty"]
    return x


def frequency_penalty(P, toks, n_prompt, stop, x, strict):
    x = x.copy()
    for t in set(toks[n_prompt:]):
        x[t] -= P["frequency_penalty"] * toks[n_prompt:].count(t)
    return x


def no_repeat_ngram(P, toks, n_prompt, stop, x, strict):
    n = P["no_repeat_ngram"]
    x = x.copy()
    if len(toks) + 1 < n:
        return x
    prefix = tuple(toks[len(toks) - n + 1:]) if n > 1 else ()
    for i in range(len(toks) - n + 1):
        if tuple(toks[i:i + n - 1]) == prefix:
            x[toks[i + n - 1]] = NEG
    return x


def min_new_tokens(P, toks, n_prompt, stop, x, strict):
    x = x.copy()
    if len(toks) - n_prompt < P["min_new_tokens"]:
        for t in stop:
            x[t] = NEG
    return x


def logit_bias(P, toks, n_prompt, stop, x, strict):
    x = x.copy()
    for t, b in P["bias"]:
        x[t] += b
    return x


def banned(P, toks, n_prompt, stop, x, strict):
    x = x.copy()
    for t in P["ban"]:
        x[t] = NEG
    return x


DEFAULT_ORDER = ["logit_bias", "banned", "repetition_penalty", "presence_penalty", "frequency_penalty",
                 "no_repeat_ngram", "min_new_tokens", "temperature", "top_k", "top_p", "min_p", "typical_p"]
WARPERS = {"temperature", "top_k", "top_p", "min_p", "typical_p"}
PROCS = {name: globals()[name] for name in DEFAULT_ORDER}


def enabled(name, P):
    return {
        "logit_bias": lambda: bool(P.get("bias")),
        "banned": lambda: bool(P.get("ban")),
        "repetition_penalty": lambda: P.get("repetition_penalty", 1) != 1,
        "presence_penalty": lambda: P.get("presence_penalty", 0) != 0,
        "frequency_penalty": lambda: P.get("frequency_penalty", 0) != 0,
        "no_repeat_ngram": lambda: P.get("no_repeat_ngram", 0) > 0,
        "min_new_tokens": lambda: P.get("min_new_tokens", 0) > 0,
        "temperature": lambda: P.get("temperature", 1) != 1,
        "top_k": lambda: P.get("top_k", 0) != 0,
        "top_p": lambda: P.get("top_p", 1) < 1,
        "min_p": lambda: P.get("min_p", 0) > 0,
        "typical_p": lambda: P.get("typical_p", 1) < 1,
    }[name]()


def chain(P, toks, n_prompt, x, sampling, strict):
    names = P["samplers"].replace(",", ";").split(";") if "samplers" in P else DEFAULT_ORDER
    x = np.array(x, dtype=np.float64)
    for name in names:
        if enabled(name, P) and (sampling or name not in WARPERS):
            x = PROCS[name](P, toks, n_prompt, P.get("stop", []), x, strict)
    return x


# ---- cases ----

def fmt(v):
    return "-inf" if v == NEG else "%.9g" % v


def params_line(P):
    out = []
    for k, v in P.items():
        if k == "bias":
            out.append("bias=" + ",".join("%d:%s" % (t, fmt(b)) for t, b in v))
        elif k in ("ban", "stop"):
            out.append("%s=%s" % (k, ",".join(str(t) for t in v)))
        else:
            out.append("%s=%s" % (k, v))
    return " ".join(out) if out else "-"


def emit(f, name, P, logits, toks=(), n_prompt=None, sampling=1, strict=False):
    logits = np.array(logits, dtype=np.float32).astype(np.float64)
    toks = list(toks)
    n_prompt = len(toks) if n_prompt is None else n_prompt
    want = chain(P, toks, n_prompt, logits, sampling, strict)
    f.write("case %s %d %d\n" % (name, len(logits), sampling))
    f.write("params %s\n" % params_line(P))
    f.write("tokens %d %s\n" % (n_prompt, " ".join(str(t) for t in toks)))
    f.write("logits %s\n" % " ".join(fmt(v) for v in logits))
    f.write("expect %s\n" % " ".join(fmt(v) for v in want))


def random_case(f, rng, name, P, V, toks=(), n_prompt=None, scale=3.0):
    """Random logits, redrawn until no decision sits within MARGIN of a threshold."""
    for _ in range(1000):
        x = (rng.standard_normal(V) * scale).astype(np.float32)
        try:
            chain(P, list(toks), len(toks) if n_prompt is None else n_prompt, x.astype(np.float64), 1, True)
        except Near:
            continue
        return emit(f, name, P, x, toks, n_prompt)
    raise RuntimeError("no case far enough from its thresholds: " + name)


def main():
    rng = np.random.default_rng(20240407)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "decode_processors.txt")
    with open(out, "w") as f:
        f.write("# written by tests/ref/decode_golden.py: the logits processors in numpy float64\n")
        hist = [3, 7, 7, 1, 12, 3, 9, 7]
        # one processor at a time, random logits
        random_case(f, rng, "temperature_0.7", {"temperature": 0.7}, 32)
        random_case(f, rng, "temperature_1.6", {"temperature": 1.6}, 32)
        random_case(f, rng, "top_k_5", {"top_k": 5}, 32)
        random_case(f, rng, "top_k_larger_than_vocab", {"top_k": 50}, 32)
        random_case(f, rng, "top_k_min_keep_8", {"top_k": 3, "min_keep": 8}, 32)
        random_case(f, rng, "top_p_0.5", {"top_p": 0.5}, 32)
        random_case(f, rng, "top_p_0.9", {"top_p": 0.9}, 64)
        random_case(f, rng, "top_p_0.1_min_keep_3", {"top_p": 0.1, "min_keep": 3}, 32)
        random_case(f, rng, "min_p_0.1", {"min_p": 0.1}, 32)
        random_case(f, rng, "min_p_0.9_min_keep_4", {"min_p": 0.9, "min_keep": 4}, 32)
        random_case(f, rng, "typical_0.5", {"typical_p": 0.5}, 32)
        random_case(f, rng, "typical_0.9", {"typical_p": 0.9}, 64)
        random_case(f, rng, "typical_0.2_min_keep_5", {"typical_p": 0.2, "min_keep": 5}, 32)
        random_case(f, rng, "repetition_1.3", {"repetition_penalty": 1.3}, 16, hist, 3)
        random_case(f, rng, "repetition_0.8", {"repetition_penalty": 0.8}, 16, hist, 3)
        random_case(f, rng, "presence_0.7", {"presence_penalty": 0.7}, 16, hist, 3)
        random_case(f, rng, "frequency_0.45", {"frequency_penalty": 0.45}, 16, hist, 3)
        random_case(f, rng, "frequency_negative", {"frequency_penalty": -1.5}, 16, hist, 3)
        random_case(f, rng, "no_repeat_ngram_2", {"no_repeat_ngram": 2}, 16, [3, 7, 1, 3, 9, 3], 2)
        random_case(f, rng, "no_repeat_ngram_3", {"no_repeat_ngram": 3}, 16, [3, 7, 1, 3, 7, 5, 3, 7], 4)
        random_case(f, rng, "no_repeat_ngram_1", {"no_repeat_ngram": 1}, 16, [2, 5, 5], 1)
        random_case(f, rng, "no_repeat_ngram_longer_than_text", {"no_repeat_ngram": 5}, 16, [2, 5, 2], 1)
        random_case(f, rng, "min_new_tokens_masks_stop", {"min_new_tokens": 4, "stop": [2, 5]}, 16, [1, 4, 6], 1)
        random_case(f, rng, "min_new_tokens_reached", {"min_new_tokens": 2, "stop": [2, 5]}, 16, [1, 4, 6], 1)
        random_case(f, rng, "logit_bias", {"bias": [(3, 2.5), (4, -1.25), (9, NEG)]}, 16)
        random_case(f, rng, "banned", {"ban": [0, 7, 15]}, 16)
        # chains: the order changes the result
        P = {"temperature": 2.0, "top_p": 0.6}
        random_case(f, rng, "temperature_then_top_p", dict(P, samplers="temperature;top_p"), 32)
        random_case(f, rng, "top_p_then_temperature", dict(P, samplers="top_p;temperature"), 32)
        random_case(f, rng, "default_chain_everything",
                    {"repetition_penalty": 1.2, "presence_penalty": 0.3, "frequency_penalty": 0.2,
                     "no_repeat_ngram": 3, "temperature": 0.8, "top_k": 20, "top_p": 0.95, "min_p": 0.02,
                     "bias": [(5, 1.0)], "ban": [6]}, 64, hist, 3)
        random_case(f, rng, "llama_cpp_order",
                    {"repetition_penalty": 1.1, "top_k": 12, "typical_p": 0.9, "top_p": 0.8, "min_p": 0.05,
                     "temperature": 0.5, "samplers": "repetition_penalty;top_k;typical_p;top_p;min_p;temperature"},
                    48, hist, 3)
        # greedy chains skip the warpers
        x = (rng.standard_normal(16) * 2).astype(np.float32)
        emit(f, "greedy_skips_warpers", {"top_k": 2, "temperature": 0.5, "repetition_penalty": 1.5}, x, hist[:4], 2,
             sampling=0)
        # ---- edge cases ----
        ties = [1.0, 2.0, 2.0, 2.0, 0.5, 2.0, -1.0, 0.0]
        emit(f, "top_k_keeps_ties_with_the_kth", {"top_k": 2}, ties)
        emit(f, "top_p_ties_rank_by_lower_id", {"top_p": 0.5}, ties)
        emit(f, "min_p_ties", {"min_p": 0.99}, ties)
        emit(f, "typical_keeps_ties_with_the_crossing", {"typical_p": 0.3}, ties)
        equal = [0.25] * 8
        emit(f, "top_k_all_equal", {"top_k": 3}, equal)
        emit(f, "top_p_all_equal_exact_half", {"top_p": 0.5}, equal)
        emit(f, "top_p_all_equal_just_above", {"top_p": 0.51}, equal)
        emit(f, "min_p_all_equal", {"min_p": 0.5}, equal)
        emit(f, "typical_all_equal", {"typical_p": 0.4}, equal)
        neg = [NEG, 1.5, NEG, 0.2, -3.0, NEG, 2.0, 0.7]
        emit(f, "top_k_with_neg_inf", {"top_k": 3}, neg)
        emit(f, "top_k_beyond_the_finite", {"top_k": 6}, neg)
        emit(f, "top_p_with_neg_inf", {"top_p": 0.8}, neg)
        emit(f, "min_p_with_neg_inf", {"min_p": 0.3}, neg)
        emit(f, "typical_with_neg_inf", {"typical_p": 0.7}, neg)
        emit(f, "temperature_with_neg_inf", {"temperature": 0.3}, neg)
        emit(f, "repetition_with_neg_inf", {"repetition_penalty": 2.0}, neg, [0, 1, 4], 3)
        emit(f, "top_p_1_is_off", {"top_p": 1.0}, neg)
        emit(f, "top_p_min_keep_beyond_the_finite", {"top_p": 0.1, "min_keep": 7}, neg)
        half = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
        emit(f, "top_p_reaching_exactly_keeps_no_more", {"top_p": 0.75}, half)
        emit(f, "top_p_crossing_token_is_kept", {"top_p": 0.7}, half)
        emit(f, "top_p_min_keep_2", {"top_p": 0.3, "min_keep": 2}, half)
        emit(f, "typical_min_keep_3", {"typical_p": 0.1, "min_keep": 3}, half)
        for name, P in [("temperature", {"temperature": 0.5}), ("top_k", {"top_k": 3}), ("top_p", {"top_p": 0.2}),
                        ("min_p", {"min_p": 0.9}), ("typical_p", {"typical_p": 0.3}),
                        ("repetition", {"repetition_penalty": 1.5}), ("presence", {"presence_penalty": 1.0}),
                        ("frequency", {"frequency_penalty": 1.0}), ("no_repeat_ngram", {"no_repeat_ngram": 2}),
                        ("bias", {"bias": [(0, 1.0)]})]:
            emit(f, "vocab_of_one_" + name, P, [0.3], [0, 0], 1)
    print("wrote", os.path.relpath(out))


if __name__ == "__main__":
    sys.exit(main())
