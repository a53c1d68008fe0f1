#!/usr/bin/python3
"""Reference for `kiln inspect` (src/api/inspect.c): the logit lens, attention weights and cosine
distances of tests/golden's gpt2_f32 and llama_gqa_f32 models, in float64 numpy, from the weights and
math of make_golden.py (which owes nothing to kiln's code) with the intermediate values kept.

For each case writes tests/golden/inspect_NAME.json:
    tokens  the token ids (those of NAME.tokens)
    lens    [layer][token][vocab]: final norm + output head on the residual stream after each layer
    attn    [layer][head][query][key]: softmax attention weights (0 above the diagonal)
    cos     [layer][token]: 1 - cos(layer input, layer output)

Usage: /usr/bin/python3 tests/ref/inspect_golden.py
"""
import json
import os

import numpy as np

import make_golden as g

NAMES = ["gpt2_f32", "llama_gqa_f32"]


def attention(q, k, v, n_kv_heads):
    """As make_golden.attention, also returning the weights (n_heads, n, n)."""
    n, n_heads, hd = q.shape
    group = n_heads // n_kv_heads
    out, probs = np.empty_like(q), np.zeros((n_heads, n, n))
    for h in range(n_heads):
        kh, vh = k[:, h // group, :], v[:, h // group, :]
        for t in range(n):
            s = kh[: t + 1] @ q[t, h] / np.sqrt(hd)
            p = np.exp(s - s.max())
            p /= p.sum()
            probs[h, t, : t + 1] = p
            out[t, h] = p @ vh[: t + 1]
    return out.reshape(n, n_heads * hd), probs


def trace(c, w, tokens):
    """The residual stream entering each layer (and leaving the last) and each layer's attention."""
    eps = g.to_f32(c["eps"]).astype(np.float64)
    n, L = len(tokens), c["n_layers"]
    x = w["token_embd.weight"][tokens]
    resid, attn = [], []
    gpt2 = c["arch"] == "gpt2"
    if gpt2:
        nh = nkv = c["n_heads"]
        hd = c["dim"] // nh
        x = x + w["position_embd.weight"][:n]
    else:
        nh, nkv, hd = c["n_heads"], c["n_kv_heads"], c["head_dim"]
        theta = g.to_f32(c["theta"]).astype(np.float64)
    for l in range(L):
        p = "blk.%d." % l
        resid.append(x)
        if gpt2:
            h = g.layernorm(x, w[p + "attn_norm.weight"], w[p + "attn_norm.bias"], eps)
            qkv = h @ w[p + "attn_qkv.weight"].T + w[p + "attn_qkv.bias"]
            q, k, v = (qkv[:, i * c["dim"]:(i + 1) * c["dim"]].reshape(n, nh, hd) for i in range(3))
            a, probs = attention(q, k, v, nh)
            x = x + a @ w[p + "attn_output.weight"].T + w[p + "attn_output.bias"]
            h = g.layernorm(x, w[p + "ffn_norm.weight"], w[p + "ffn_norm.bias"], eps)
            x = x + g.gelu_tanh(h @ w[p + "ffn_up.weight"].T + w[p + "ffn_up.bias"]) @ w[p + "ffn_down.weight"].T \
                + w[p + "ffn_down.bias"]
        else:
            h = g.rmsnorm(x, w[p + "attn_norm.weight"], eps)
            q, k, v = (h @ w[p + "attn_%s.weight" % s].T for s in "qkv")
            q = g.rope(q.reshape(n, nh, hd), theta, False)
            k = g.rope(k.reshape(n, nkv, hd), theta, False)
            a, probs = attention(q, k, v.reshape(n, nkv, hd), nkv)
            x = x + a @ w[p + "attn_output.weight"].T
            h = g.rmsnorm(x, w[p + "ffn_norm.weight"], eps)
            x = x + (g.silu(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
        attn.append(probs)
    resid.append(x)
    return resid, attn


def lens(c, w, x):
    eps = g.to_f32(c["eps"]).astype(np.float64)
    if c["arch"] == "gpt2":
        x = g.layernorm(x, w["output_norm.weight"], w["output_norm.bias"], eps)
    else:
        x = g.rmsnorm(x, w["output_norm.weight"], eps)
    head = w["output.weight"] if "output.weight" in w else w["token_embd.weight"]
    return x @ head.T


def main():
    outdir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")
    for c in g.CASES:
        if c["name"] not in NAMES:
            continue
        w = {name: g.store(x, c["wtype"] if x.ndim == 2 else g.GGML_F32)[1] for name, x in g.make_weights(c).items()}
        with open(os.path.join(outdir, c["name"] + ".tokens")) as f:
            tokens = [int(t) for t in f.read().split()]
        resid, attn = trace(c, w, np.array(tokens))
        L = c["n_layers"]
        out = {
            "tokens": tokens,
            "lens": [lens(c, w, resid[l + 1]).round(7).tolist() for l in range(L)],
            "attn": [a.round(8).tolist() for a in attn],
            "cos": [(1 - np.sum(resid[l] * resid[l + 1], axis=1)
                     / np.linalg.norm(resid[l], axis=1) / np.linalg.norm(resid[l + 1], axis=1)).round(9).tolist()
                    for l in range(L)],
        }
        # the last layer's lens is the model's output: check against the forward-pass golden
        want = np.fromfile(os.path.join(outdir, c["name"] + ".logits"), dtype="<f4").reshape(len(tokens), -1)
        assert np.allclose(np.array(out["lens"][-1]), want, atol=1e-4), c["name"]
        path = os.path.join(outdir, "inspect_%s.json" % c["name"])
        with open(path, "w") as f:
            json.dump(out, f, separators=(",", ":"))
        print("%s: %d bytes" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    main()
