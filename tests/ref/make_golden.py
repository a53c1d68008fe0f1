#!/usr/bin/python3
"""kiln's independent reference for the transformer forward pass.

Creates small random-weight models as GGUF files and computes their logits with numpy in float64, so
that tests/test_golden.c can check kiln's forward pass against numbers that owe nothing to kiln's code:
the GGUF writer below is written from the GGUF v3 specification (ggml/docs/gguf.md), not from kiln's
reader or llama.cpp's gguf-py, and the forward pass from the math in docs/REFERENCE.md.

For each case it writes into tests/golden/:
    NAME.gguf    the model
    NAME.tokens  the token ids fed to it, one line, space-separated
    NAME.logits  raw little-endian f32 [n_tokens, n_vocab]: the logits after each token

Usage: /usr/bin/python3 tests/ref/make_golden.py     (same files every run: seeds are fixed)
"""
import os
import struct
import sys

import numpy as np

# ---- GGUF v3 writer ----

GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30
GGUF_U32, GGUF_F32, GGUF_STRING = 4, 6, 8
ALIGNMENT = 32
# llama.cpp's general.file_type for models whose matrices are all of one type.
FILE_TYPE = {GGML_F32: 0, GGML_F16: 1, GGML_BF16: 32}
TYPE_NAME = {GGML_F32: "f32", GGML_F16: "f16", GGML_BF16: "bf16"}


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, value):
    out = gguf_string(key) + struct.pack("<I", vtype)
    if vtype == GGUF_U32:
        return out + struct.pack("<I", value)
    if vtype == GGUF_F32:
        return out + struct.pack("<f", value)
    if vtype == GGUF_STRING:
        return out + gguf_string(value)
    raise ValueError("unsupported value type %d" % vtype)


def pad(n):
    return (-n) % ALIGNMENT


def gguf_bytes(kvs, tensors):
    """KVS: list of (key, vtype, value). TENSORS: list of (name, ggml_type, shape, raw bytes), shape in
    numpy order (slowest first); GGUF lists dimensions fastest first, so ne is the shape reversed."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    head += b"".join(gguf_kv(*kv) for kv in kvs)
    data = b""
    for name, gtype, shape, raw in tensors:
        head += gguf_string(name) + struct.pack("<I", len(shape))
        head += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        head += struct.pack("<IQ", gtype, len(data))
        data += raw + b"\0" * pad(len(raw))
    return head + b"\0" * pad(len(head)) + data


# ---- Weight types: the stored bits, and the exact values they hold ----

def to_f32(x):
    return np.asarray(x, dtype="<f4")


def bf16_bits(x):
    """Rounds to bfloat16 (the upper half of an f32), to nearest, ties to even."""
    u = to_f32(x).view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def store(x, gtype):
    """Returns (raw bytes, the float64 values those bytes hold): the reference computes from the
    rounded weights, so the only difference left between it and kiln is arithmetic."""
    x32 = to_f32(x)
    if gtype == GGML_F32:
        return x32.tobytes(), x32.astype(np.float64)
    if gtype == GGML_F16:
        h = x32.astype("<f2")
        return h.tobytes(), h.astype(np.float64)
    if gtype == GGML_BF16:
        b = bf16_bits(x32)
        return b.tobytes(), (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    raise ValueError("unsupported ggml type %d" % gtype)


# ---- Cases ----

CASES = [
    dict(name="gpt2_f32", arch="gpt2", wtype=GGML_F32, seed=101, dim=32, n_layers=2, n_heads=4,
         ffn_dim=128, n_vocab=64, ctx_len=16, eps=1e-5, n_tokens=10, tied=True),
    dict(name="llama_gqa_f32", arch="llama", wtype=GGML_F32, seed=202, dim=48, n_layers=2, n_heads=4,
         n_kv_heads=2, head_dim=12, ffn_dim=64, n_vocab=80, ctx_len=64, eps=1e-5, theta=10000.0,
         n_tokens=12, tied=False),
    dict(name="llama_mqa_headdim_f32", arch="llama", wtype=GGML_F32, seed=303, dim=64, n_layers=2,
         n_heads=4, n_kv_heads=1, head_dim=24, ffn_dim=32, n_vocab=64, ctx_len=64, eps=1e-5,
         theta=500000.0, n_tokens=11, tied=True),
    dict(name="qwen2_bias_f32", arch="qwen2", wtype=GGML_F32, seed=404, dim=48, n_layers=2, n_heads=4,
         n_kv_heads=2, head_dim=12, ffn_dim=64, n_vocab=72, ctx_len=64, eps=1e-6, theta=1000000.0,
         n_tokens=9, tied=True),
    dict(name="llama_gqa_f16", arch="llama", wtype=GGML_F16, seed=202, dim=48, n_layers=2, n_heads=4,
         n_kv_heads=2, head_dim=12, ffn_dim=64, n_vocab=80, ctx_len=64, eps=1e-5, theta=10000.0,
         n_tokens=12, tied=False),
    dict(name="llama_gqa_bf16", arch="llama", wtype=GGML_BF16, seed=202, dim=48, n_layers=2, n_heads=4,
         n_kv_heads=2, head_dim=12, ffn_dim=64, n_vocab=80, ctx_len=64, eps=1e-5, theta=10000.0,
         n_tokens=12, tied=False),
    dict(name="gpt2_bf16", arch="gpt2", wtype=GGML_BF16, seed=101, dim=32, n_layers=2, n_heads=4,
         ffn_dim=128, n_vocab=64, ctx_len=16, eps=1e-5, n_tokens=10, tied=True),
]

MATRIX_STD = 0.15   # with inputs of unit RMS and 32-64 inputs, outputs (and logits) come out O(1)
EMBED_STD = 0.2
NORM_STD = 0.1      # norm weights are 1 + N(0, NORM_STD): far enough from 1 that a dropped one shows
BIAS_STD = 0.1


def make_weights(c):
    """Float64 weights of case C by tensor name; matrices are (out, in) as GGUF stores them."""
    rng = np.random.RandomState(c["seed"])  # legacy stream: numpy guarantees it stays the same
    dim, ffn, L = c["dim"], c["ffn_dim"], c["n_layers"]

    def mat(rows, cols, std=MATRIX_STD):
        return rng.standard_normal((rows, cols)) * std

    def norm(n):
        return 1.0 + rng.standard_normal(n) * NORM_STD

    def bias(n):
        return rng.standard_normal(n) * BIAS_STD

    w = {"token_embd.weight": mat(c["n_vocab"], dim, EMBED_STD)}
    if c["arch"] == "gpt2":
        w["position_embd.weight"] = mat(c["ctx_len"], dim, EMBED_STD)
        for l in range(L):
            p = "blk.%d." % l
            w[p + "attn_norm.weight"], w[p + "attn_norm.bias"] = norm(dim), bias(dim)
            w[p + "attn_qkv.weight"], w[p + "attn_qkv.bias"] = mat(3 * dim, dim), bias(3 * dim)
            w[p + "attn_output.weight"], w[p + "attn_output.bias"] = mat(dim, dim), bias(dim)
            w[p + "ffn_norm.weight"], w[p + "ffn_norm.bias"] = norm(dim), bias(dim)
            w[p + "ffn_up.weight"], w[p + "ffn_up.bias"] = mat(ffn, dim), bias(ffn)
            w[p + "ffn_down.weight"], w[p + "ffn_down.bias"] = mat(dim, ffn), bias(dim)
        w["output_norm.weight"], w["output_norm.bias"] = norm(dim), bias(dim)
    else:
        q_dim = c["n_heads"] * c["head_dim"]
        kv_dim = c["n_kv_heads"] * c["head_dim"]
        for l in range(L):
            p = "blk.%d." % l
            w[p + "attn_norm.weight"] = norm(dim)
            w[p + "attn_q.weight"] = mat(q_dim, dim)
            w[p + "attn_k.weight"] = mat(kv_dim, dim)
            w[p + "attn_v.weight"] = mat(kv_dim, dim)
            if c["arch"] == "qwen2":
                w[p + "attn_q.bias"], w[p + "attn_k.bias"] = bias(q_dim), bias(kv_dim)
                w[p + "attn_v.bias"] = bias(kv_dim)
            w[p + "attn_output.weight"] = mat(dim, q_dim)
            w[p + "ffn_norm.weight"] = norm(dim)
            w[p + "ffn_gate.weight"] = mat(ffn, dim)
            w[p + "ffn_up.weight"] = mat(ffn, dim)
            w[p + "ffn_down.weight"] = mat(dim, ffn)
        w["output_norm.weight"] = norm(dim)
    if not c["tied"]:
        w["output.weight"] = mat(c["n_vocab"], dim)
    return w


def metadata(c):
    """The key/value pairs llama.cpp's converters write, with the value types they use. qwen2 files, like
    the real ones, leave out key_length, rope.dimension_count and vocab_size: a reader must derive them."""
    a = c["arch"]
    kvs = [("general.architecture", GGUF_STRING, a),
           ("general.name", GGUF_STRING, "kiln golden " + c["name"]),
           ("general.alignment", GGUF_U32, ALIGNMENT),
           ("general.file_type", GGUF_U32, FILE_TYPE[c["wtype"]]),
           (a + ".context_length", GGUF_U32, c["ctx_len"]),
           (a + ".embedding_length", GGUF_U32, c["dim"]),
           (a + ".block_count", GGUF_U32, c["n_layers"]),
           (a + ".feed_forward_length", GGUF_U32, c["ffn_dim"]),
           (a + ".attention.head_count", GGUF_U32, c["n_heads"])]
    if a == "gpt2":
        return kvs + [(a + ".attention.layer_norm_epsilon", GGUF_F32, c["eps"])]
    kvs += [(a + ".attention.head_count_kv", GGUF_U32, c["n_kv_heads"]),
            (a + ".attention.layer_norm_rms_epsilon", GGUF_F32, c["eps"]),
            (a + ".rope.freq_base", GGUF_F32, c["theta"])]
    if a == "llama":
        kvs += [(a + ".rope.dimension_count", GGUF_U32, c["head_dim"]),
                (a + ".attention.key_length", GGUF_U32, c["head_dim"]),
                (a + ".attention.value_length", GGUF_U32, c["head_dim"]),
                (a + ".vocab_size", GGUF_U32, c["n_vocab"])]
    return kvs


# ---- The forward pass (any float dtype; the goldens use float64) ----

def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layernorm(x, w, b, eps):
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def rope(x, theta, neox):
    """X: (n_tokens, n_heads, head_dim), token t at position t. Rotates pairs of each head by
    t * theta^(-2i/head_dim): interleaved pairs (x[2i], x[2i+1]) for llama, (x[i], x[i + head_dim/2])
    for NEOX (qwen2)."""
    n, _, hd = x.shape
    freq = theta ** (-2.0 * np.arange(hd // 2, dtype=x.dtype) / hd)
    ang = np.arange(n, dtype=x.dtype)[:, None] * freq
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = (x[..., : hd // 2], x[..., hd // 2:]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if neox:
        out[..., : hd // 2], out[..., hd // 2:] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def attention(q, k, v, n_kv_heads):
    """Causal attention. Q: (n, n_heads, hd); K, V: (n, n_kv_heads, hd). Query head h reads kv head
    h // (n_heads / n_kv_heads); token t attends to tokens 0..t."""
    n, n_heads, hd = q.shape
    group = n_heads // n_kv_heads
    out = np.empty_like(q)
    for h in range(n_heads):
        kh, vh = k[:, h // group, :], v[:, h // group, :]
        for t in range(n):
            s = kh[: t + 1] @ q[t, h] / np.sqrt(q.dtype.type(hd))
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ vh[: t + 1]
    return out.reshape(n, n_heads * hd)


def silu(x):
    return x / (1 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(x.dtype.type(2 / np.pi)) * (x + 0.044715 * x ** 3)))


def forward(c, w, tokens, dt):
    """Logits (n_tokens, n_vocab) after each of TOKENS, computed in float type DT from weights W."""
    w = {k: v.astype(dt) for k, v in w.items()}
    eps = dt(to_f32(c["eps"]))  # the file holds eps (and theta) as f32: use that value
    n, L = len(tokens), c["n_layers"]
    x = w["token_embd.weight"][tokens]
    if c["arch"] == "gpt2":
        nh = c["n_heads"]
        hd = c["dim"] // nh
        x = x + w["position_embd.weight"][:n]
        for l in range(L):
            p = "blk.%d." % l
            h = layernorm(x, w[p + "attn_norm.weight"], w[p + "attn_norm.bias"], eps)
            qkv = h @ w[p + "attn_qkv.weight"].T + w[p + "attn_qkv.bias"]
            q, k, v = (qkv[:, i * c["dim"]:(i + 1) * c["dim"]].reshape(n, nh, hd) for i in range(3))
            x = x + attention(q, k, v, nh) @ w[p + "attn_output.weight"].T + w[p + "attn_output.bias"]
            h = layernorm(x, w[p + "ffn_norm.weight"], w[p + "ffn_norm.bias"], eps)
            u = gelu_tanh(h @ w[p + "ffn_up.weight"].T + w[p + "ffn_up.bias"])
            x = x + u @ w[p + "ffn_down.weight"].T + w[p + "ffn_down.bias"]
        x = layernorm(x, w["output_norm.weight"], w["output_norm.bias"], eps)
    else:
        nh, nkv, hd = c["n_heads"], c["n_kv_heads"], c["head_dim"]
        theta, neox = dt(to_f32(c["theta"])), c["arch"] == "qwen2"
        for l in range(L):
            p = "blk.%d." % l
            h = rmsnorm(x, w[p + "attn_norm.weight"], eps)
            q, k, v = (h @ w[p + "attn_%s.weight" % s].T for s in "qkv")
            if c["arch"] == "qwen2":
                q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
            q = rope(q.reshape(n, nh, hd), theta, neox)
            k = rope(k.reshape(n, nkv, hd), theta, neox)
            x = x + attention(q, k, v.reshape(n, nkv, hd), nkv) @ w[p + "attn_output.weight"].T
            h = rmsnorm(x, w[p + "ffn_norm.weight"], eps)
            g = silu(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)
            x = x + g @ w[p + "ffn_down.weight"].T
        x = rmsnorm(x, w["output_norm.weight"], eps)
    head = w["output.weight"] if "output.weight" in w else w["token_embd.weight"]
    return x @ head.T


# ---- Goldens ----

# The tolerances tests/test_golden.c uses: |kiln - golden| <= ATOL + RTOL * |golden|.
TOLERANCE = {GGML_F32: 1e-5, GGML_F16: 1e-4, GGML_BF16: 1e-4}
MAX_GGUF_BYTES, MAX_TOTAL_BYTES = 200 * 1024, 2 * 1024 * 1024


def make_case(c, outdir):
    w = make_weights(c)
    tensors, stored = [], {}
    for name, x in w.items():
        gtype = c["wtype"] if x.ndim == 2 else GGML_F32  # norms and biases stay f32, as in llama.cpp
        raw, stored[name] = store(x, gtype)
        tensors.append((name, gtype, x.shape, raw))
    gguf = gguf_bytes(metadata(c), tensors)

    tokens = np.random.RandomState(c["seed"] + 1).randint(0, c["n_vocab"], c["n_tokens"])
    logits = forward(c, stored, tokens, np.float64)

    # The goldens must be well conditioned: the same math in f32 (what kiln computes in) has to land
    # well inside the tolerance, or a correct kiln could fail (or a wrong one pass) by luck.
    tol = TOLERANCE[c["wtype"]]
    err32 = np.max(np.abs(forward(c, stored, tokens, np.float32) - logits) / (tol + tol * np.abs(logits)))
    spread = logits.std(axis=1)
    if err32 > 0.25 or spread.min() < 0.3 or np.abs(logits).max() > 20:
        sys.exit("%s: ill-conditioned golden (f32 error %.2f of tolerance, logit spread %.2f..%.2f)"
                 % (c["name"], err32, spread.min(), spread.max()))
    if len(gguf) > MAX_GGUF_BYTES:
        sys.exit("%s: model is %d bytes, over the %d limit" % (c["name"], len(gguf), MAX_GGUF_BYTES))

    base = os.path.join(outdir, c["name"])
    files = {base + ".gguf": gguf,
             base + ".tokens": (" ".join(str(t) for t in tokens) + "\n").encode(),
             base + ".logits": logits.astype("<f4").tobytes()}
    for path, data in files.items():
        with open(path, "wb") as f:
            f.write(data)
    print("%-22s %-5s %6d bytes  %2d tokens x %2d vocab  logit std %.2f..%.2f  f32 error %.3f of tol"
          % (c["name"], TYPE_NAME[c["wtype"]], len(gguf), len(tokens), c["n_vocab"], spread.min(),
             spread.max(), err32))
    return sum(len(d) for d in files.values())


def main():
    outdir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")
    os.makedirs(outdir, exist_ok=True)
    total = sum(make_case(c, outdir) for c in CASES)
    if total > MAX_TOTAL_BYTES:
        sys.exit("goldens are %d bytes, over the %d limit" % (total, MAX_TOTAL_BYTES))
    print("%d cases, %d bytes in %s" % (len(CASES), total, outdir))


if __name__ == "__main__":
    main()
