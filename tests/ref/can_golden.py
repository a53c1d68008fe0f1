#!/usr/bin/python3
"""Reference for CAN (src/api/can.c): the algorithm of Jia, Su et al. (Findings of EMNLP 2021) in
numpy, following the paper's reference code: top-k entropy / log k as the uncertainty, the confident
predictions fixed, and for each uncertain one ITERS rounds of L**alpha, columns scaled to the prior,
rows to one.

Writes tests/golden/can.json: {"prior", "probs" (n x m), "cases": [{"top_k", "threshold", "alpha",
"iters", "expected" (n x m), "adjusted" (n booleans)}]}.

Usage: /usr/bin/python3 tests/ref/can_golden.py
"""
import json
import os

import numpy as np


def can(probs, prior, top_k, threshold, alpha, iters):
    topk = np.sort(probs, axis=1)[:, -top_k:]
    topk = topk / topk.sum(axis=1, keepdims=True)
    uncertainty = -(topk * np.log(topk)).sum(axis=1) / np.log(top_k)
    unsure = uncertainty >= threshold
    confident = probs[~unsure]
    out = probs.copy()
    for i in np.where(unsure)[0]:
        L = np.concatenate([confident, probs[i][None]], axis=0)
        for _ in range(iters):
            L = L ** alpha
            L = L / L.sum(axis=0, keepdims=True)
            L = L * prior[None]
            L = L / L.sum(axis=1, keepdims=True)
        out[i] = L[-1]
    return out, unsure


def main():
    rng = np.random.RandomState(7)
    n, m = 40, 4
    logits = rng.standard_normal((n, m)) * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    cases = []
    for top_k, threshold, alpha, iters in [(3, 0.9, 1.0, 1), (2, 0.6, 2.0, 3), (4, 0.75, 0.5, 5)]:
        out, unsure = can(probs, prior, top_k, threshold, alpha, iters)
        cases.append(dict(top_k=top_k, threshold=threshold, alpha=alpha, iters=iters, expected=out.tolist(),
                          adjusted=unsure.tolist()))
        print("top_k %d threshold %.2f alpha %.1f iters %d: %d of %d adjusted, %d argmax changed"
              % (top_k, threshold, alpha, iters, unsure.sum(), n, (out.argmax(1) != probs.argmax(1)).sum()))
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden", "can.json")
    with open(path, "w") as f:
        json.dump(dict(prior=prior.tolist(), probs=probs.tolist(), cases=cases), f)


if __name__ == "__main__":
    main()
