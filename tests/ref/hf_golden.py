#!/usr/bin/python3
"""kiln's independent reference for Hugging Face checkpoints.

Writes tiny random checkpoints exactly as transformers lays them out (tensor names, shapes, config.json
keys, safetensors files, sharded with model.safetensors.index.json for some) for every architecture
kiln imports, and computes their logits with a PyTorch forward pass in float64 written here from the
models' math (the modeling_*.py definitions), not from kiln: kiln must import the checkpoint and agree.
It does the same for the real ../shared/testdata/tiny-gpt2 (written by transformers), and writes the
RoPE frequencies of every rope_scaling type from transformers' formulas (modeling_rope_utils).

Output, in tests/golden/hf/:
    NAME/            the checkpoint (config.json, model.safetensors or shards + index)
    NAME.tokens      token ids, one line
    NAME.logits      little-endian f32 [n_tokens, n_vocab]: logits after each token
    NAME.score       little-endian f32 [n_labels]: the score head on the last token (classifiers)
    rope_freqs.txt   per line: case name, n_ctx, mscale, then the rope_dim/2 inverse frequencies

Usage: /usr/bin/python3 tests/ref/hf_golden.py   (fixed seeds: the same bytes every run)
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

OUT = "tests/golden/hf"
TINY_GPT2 = os.environ.get("KILN_TESTDATA", "../shared/testdata") + "/tiny-gpt2"

# ---- safetensors, from the format description (u64 header length, JSON header, data) ----


def bf16_bits(x):
    u = np.asarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def store(x, dtype):
    """(raw bytes, float64 values held) of X stored as DTYPE."""
    x32 = np.asarray(x, dtype="<f4")
    if dtype == "F32":
        return x32.tobytes(), x32.astype(np.float64)
    if dtype == "F16":
        h = x32.astype("<f2")
        return h.tobytes(), h.astype(np.float64)
    b = bf16_bits(x32)
    return b.tobytes(), (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def st_write(path, tensors):
    """TENSORS: list of (name, dtype, shape, raw)."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors))


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header, base, out = json.loads(data[8:8 + n]), 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        assert info["dtype"] == "F32"
        out[name] = np.frombuffer(data[base + b:base + e], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


# ---- RoPE frequencies (transformers' modeling_rope_utils formulas) ----


def inv_freq_default(base, d):
    return 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)


def rope_inv_freq(cfg, d, seq_len):
    """(inv_freq, attention scaling) for config CFG with D rotated dims at sequence length SEQ_LEN."""
    base = cfg.get("rope_theta", 10000.0)
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    f = rs.get("factor", 1.0)
    orig = rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
    if kind == "default":
        return inv_freq_default(base, d), 1.0
    if kind == "linear":
        return inv_freq_default(base, d) / f, 1.0
    if kind == "ntk":  # NTK-aware base (bloc97): base * factor^(d/(d-2))
        return inv_freq_default(base * f ** (d / (d - 2)), d), 1.0
    if kind == "dynamic":
        seq = max(seq_len, orig)
        return inv_freq_default(base * ((f * seq / orig) - (f - 1)) ** (d / (d - 2)), d), 1.0
    if kind == "yarn":
        def mscale(s):
            return 1.0 if s <= 1 else 0.1 * math.log(s) + 1.0
        att = rs.get("attention_factor") or mscale(f)
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def corr_dim(rot):
            return (d * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))
        low, high = max(math.floor(corr_dim(fast)), 0), min(math.ceil(corr_dim(slow)), d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extrap = 1 - ramp
        pos = base ** (np.arange(0, d, 2, dtype=np.float64) / d)
        return (1 / (f * pos)) * (1 - extrap) + (1 / pos) * extrap, att
    if kind == "llama3":
        inv = inv_freq_default(base, d)
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        lo_wave, hi_wave = orig / lo, orig / hi
        wave = 2 * math.pi / inv
        out = np.where(wave > lo_wave, inv / f, inv)
        smooth = (orig / wave - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / f + smooth * out
        medium = ~(wave < hi_wave) & ~(wave > lo_wave)
        return np.where(medium, smoothed, out), 1.0
    raise ValueError(kind)


# ---- The forward passes, float64 ----


def T(x):
    return torch.tensor(x, dtype=torch.float64)


def rmsnorm(x, w, eps, plus_one=False):
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y * (1 + w if plus_one else w)


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1 + torch.exp(-x))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


def attention(q, k, v, n_heads, n_kv, hd, window):
    """Q [T, H*hd], K/V [T, KV*hd] -> [T, H*hd]; causal, a key j visible to query i when i-window < j <= i."""
    n = q.shape[0]
    q = q.view(n, n_heads, hd).transpose(0, 1)
    k = k.view(n, n_kv, hd).transpose(0, 1).repeat_interleave(n_heads // n_kv, 0)
    v = v.view(n, n_kv, hd).transpose(0, 1).repeat_interleave(n_heads // n_kv, 0)
    s = q @ k.transpose(1, 2) / math.sqrt(hd)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    mask = j > i
    if window:
        mask = mask | (j <= i - window)
    p = torch.softmax(s.masked_fill(mask, float("-inf")), -1)
    return (p @ v).transpose(0, 1).reshape(n, n_heads * hd)


def llama_like(cfg, W, tokens, seq_len):
    """LlamaForCausalLM and the families that differ from it by a few lines (below, by model_type)."""
    mt = cfg["model_type"]
    dim, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim", dim // H)
    eps = cfg["rms_norm_eps"]
    gemma = mt == "gemma"
    window = cfg.get("sliding_window") if mt in ("mistral", "phi3") else None
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))
    inv, att = rope_inv_freq(cfg, rot, seq_len)
    pos = np.arange(len(tokens), dtype=np.float64)[:, None] * inv[None, :]
    emb = np.concatenate([pos, pos], -1)
    cos, sin = T(np.cos(emb) * att), T(np.sin(emb) * att)

    def rope(x, nh):
        x = x.view(len(tokens), nh, hd)
        r, rest = x[..., :rot], x[..., rot:]
        r = r * cos[:, None, :] + rotate_half(r) * sin[:, None, :]
        return torch.cat([r, rest], -1).reshape(len(tokens), nh * hd)

    x = W["model.embed_tokens.weight"][tokens]
    if gemma:
        x = x * math.sqrt(dim)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps, gemma)
        if mt == "phi3":
            qkv = h @ W[p + "self_attn.qkv_proj.weight"].T
            q, k, v = qkv.split([H * hd, KV * hd, KV * hd], -1)
        elif mt == "baichuan":
            q, k, v = (h @ W[p + "self_attn.W_pack.weight"].T).chunk(3, -1)
        else:
            q, k, v = (h @ W[p + "self_attn.%s_proj.weight" % n].T for n in "qkv")
            if mt == "qwen2":
                q, k, v = (t + W[p + "self_attn.%s_proj.bias" % n] for t, n in zip((q, k, v), "qkv"))
        o = attention(rope(q, H), rope(k, KV), v, H, KV, hd, window)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps, gemma)
        if mt == "phi3":
            gate, up = (h @ W[p + "mlp.gate_up_proj.weight"].T).chunk(2, -1)
        else:
            gate, up = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + ((gelu_tanh(gate) if gemma else silu(gate)) * up) @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"], eps, gemma)
    if "score.weight" in W:
        return None, x[-1] @ W["score.weight"].T
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", gemma) else W["lm_head.weight"]
    if cfg["architectures"][0] == "BaichuanForCausalLM":  # NormHead: rows L2-normalized
        head = head / head.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x @ head.T, None


def gpt2(cfg, W, tokens):
    pre = "transformer." if "transformer.wte.weight" in W else ""
    dim, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    x = W[pre + "wte.weight"][tokens] + W[pre + "wpe.weight"][torch.arange(len(tokens))]
    for l in range(cfg["n_layer"]):
        p = pre + "h.%d." % l
        h = layernorm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        q, k, v = (h @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]).split(dim, -1)  # Conv1D: x W + b
        o = attention(q, k, v, H, H, dim // H, None)
        x = x + o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        h = layernorm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        h = gelu_tanh(h @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        x = x + h @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    x = layernorm(x, W[pre + "ln_f.weight"], W[pre + "ln_f.bias"], eps)
    return x @ W[pre + "wte.weight"].T, None


# ---- Random checkpoints with Hugging Face's names ----


def make_weights(cfg, rng):
    """HF tensor name -> float64 array (Linear weights [out, in], GPT-2 Conv1D [in, out])."""
    W = {}

    def mat(*shape, std=0.15):
        return rng.standard_normal(shape) * std

    def norm(n):
        return rng.standard_normal(n) * 0.1 + (0.0 if cfg["model_type"] == "gemma" else 1.0)

    if cfg["model_type"] == "gpt2":
        dim, ffn, pre = cfg["n_embd"], cfg["n_inner"], "transformer."
        W[pre + "wte.weight"] = mat(cfg["vocab_size"], dim, std=0.2)
        W[pre + "wpe.weight"] = mat(cfg["n_positions"], dim, std=0.2)
        for l in range(cfg["n_layer"]):
            p = pre + "h.%d." % l
            W[p + "ln_1.weight"], W[p + "ln_1.bias"] = norm(dim), mat(dim, std=0.1)
            W[p + "attn.c_attn.weight"], W[p + "attn.c_attn.bias"] = mat(dim, 3 * dim), mat(3 * dim, std=0.1)
            W[p + "attn.c_proj.weight"], W[p + "attn.c_proj.bias"] = mat(dim, dim), mat(dim, std=0.1)
            W[p + "ln_2.weight"], W[p + "ln_2.bias"] = norm(dim), mat(dim, std=0.1)
            W[p + "mlp.c_fc.weight"], W[p + "mlp.c_fc.bias"] = mat(dim, ffn), mat(ffn, std=0.1)
            W[p + "mlp.c_proj.weight"], W[p + "mlp.c_proj.bias"] = mat(ffn, dim), mat(dim, std=0.1)
        W[pre + "ln_f.weight"], W[pre + "ln_f.bias"] = norm(dim), mat(dim, std=0.1)
        return W
    mt, dim, ffn = cfg["model_type"], cfg["hidden_size"], cfg["intermediate_size"]
    H = cfg["num_attention_heads"]
    KV, hd = cfg.get("num_key_value_heads", H), cfg.get("head_dim", dim // H)
    W["model.embed_tokens.weight"] = mat(cfg["vocab_size"], dim, std=0.2)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        W[p + "input_layernorm.weight"] = norm(dim)
        if mt == "phi3":
            W[p + "self_attn.qkv_proj.weight"] = mat((H + 2 * KV) * hd, dim)
        elif mt == "baichuan":
            W[p + "self_attn.W_pack.weight"] = mat(3 * dim, dim)
        else:
            W[p + "self_attn.q_proj.weight"] = mat(H * hd, dim)
            W[p + "self_attn.k_proj.weight"] = mat(KV * hd, dim)
            W[p + "self_attn.v_proj.weight"] = mat(KV * hd, dim)
            if mt == "qwen2":
                for n, rows in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
                    W[p + "self_attn.%s_proj.bias" % n] = mat(rows, std=0.1)
        W[p + "self_attn.o_proj.weight"] = mat(dim, H * hd)
        W[p + "post_attention_layernorm.weight"] = norm(dim)
        if mt == "phi3":
            W[p + "mlp.gate_up_proj.weight"] = mat(2 * ffn, dim)
        else:
            W[p + "mlp.gate_proj.weight"] = mat(ffn, dim)
            W[p + "mlp.up_proj.weight"] = mat(ffn, dim)
        W[p + "mlp.down_proj.weight"] = mat(dim, ffn)
    W["model.norm.weight"] = norm(dim)
    if cfg["architectures"][0].endswith("ForSequenceClassification"):
        W["score.weight"] = mat(len(cfg["id2label"]), dim)
    elif not cfg.get("tie_word_embeddings", mt == "gemma"):
        W["lm_head.weight"] = mat(cfg["vocab_size"], dim, std=0.2)
    return W


def llama_cfg(arch, model_type, **kw):
    cfg = dict(architectures=[arch], model_type=model_type, hidden_size=32, intermediate_size=48,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
               rms_norm_eps=1e-5, rope_theta=10000.0, vocab_size=56, hidden_act="silu",
               tie_word_embeddings=False, torch_dtype="float32")
    cfg.update(kw)
    return {k: v for k, v in cfg.items() if v is not None}


CASES = [
    dict(name="llama", cfg=llama_cfg("LlamaForCausalLM", "llama"), seed=11, dtype="F32"),
    dict(name="llama_bf16_sharded", cfg=llama_cfg("LlamaForCausalLM", "llama", tie_word_embeddings=True,
                                                    torch_dtype="bfloat16"), seed=12, dtype="BF16", shards=3),
    dict(name="mistral_window", cfg=llama_cfg("MistralForCausalLM", "mistral", sliding_window=4), seed=13,
         dtype="F32"),
    dict(name="qwen2", cfg=llama_cfg("Qwen2ForCausalLM", "qwen2", tie_word_embeddings=True, rope_theta=1e6,
                                     rms_norm_eps=1e-6, use_sliding_window=False, sliding_window=32), seed=14,
         dtype="F32", shards=2),
    dict(name="gpt2", cfg=dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", n_embd=32, n_layer=2, n_head=4,
                               n_inner=64, n_positions=32, vocab_size=50, layer_norm_epsilon=1e-5,
                               activation_function="gelu_new", torch_dtype="float32"), seed=15, dtype="F32"),
    dict(name="baichuan2", cfg=llama_cfg("BaichuanForCausalLM", "baichuan", num_key_value_heads=None,
                                         rms_norm_eps=1e-6), seed=16, dtype="F32"),
    dict(name="gemma", cfg=llama_cfg("GemmaForCausalLM", "gemma", head_dim=12, num_key_value_heads=1,
                                     hidden_act="gelu", hidden_activation="gelu_pytorch_tanh",
                                     tie_word_embeddings=True, rms_norm_eps=1e-6), seed=17, dtype="F32"),
    dict(name="phi3", cfg=llama_cfg("Phi3ForCausalLM", "phi3", num_key_value_heads=4, sliding_window=2047),
         seed=18, dtype="F16"),
    dict(name="llama_score", cfg=llama_cfg("LlamaForSequenceClassification", "llama",
                                           id2label={"0": "LABEL_0", "1": "LABEL_1"}), seed=19, dtype="F32"),
    dict(name="llama_yarn", cfg=llama_cfg("LlamaForCausalLM", "llama", head_dim=16, num_attention_heads=2,
                                          num_key_value_heads=1, rope_scaling=dict(
                                              rope_type="yarn", factor=4.0, original_max_position_embeddings=16)),
         seed=20, dtype="F32"),
    dict(name="llama3_scaled", cfg=llama_cfg("LlamaForCausalLM", "llama", head_dim=16, num_attention_heads=2,
                                             num_key_value_heads=1, rope_theta=500000.0, rope_scaling=dict(
                                                 rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                 high_freq_factor=4.0, original_max_position_embeddings=8)),
         seed=21, dtype="F32"),
]
N_TOKENS = 12

# Frequencies: (name, config, rotated dims, n_ctx)
ROPE_CASES = [
    ("none", dict(rope_theta=10000.0, max_position_embeddings=2048), 64, 2048),
    ("linear", dict(rope_theta=10000.0, max_position_embeddings=8192,
                    rope_scaling=dict(type="linear", factor=4.0)), 64, 8192),
    ("ntk", dict(rope_theta=10000.0, max_position_embeddings=4096, rope_scaling=dict(type="ntk", factor=4.0)), 128,
     4096),
    ("dynamic_within", dict(rope_theta=10000.0, max_position_embeddings=2048,
                            rope_scaling=dict(type="dynamic", factor=2.0)), 64, 2048),
    ("dynamic_beyond", dict(rope_theta=10000.0, max_position_embeddings=2048,
                            rope_scaling=dict(type="dynamic", factor=2.0)), 64, 3000),
    ("yarn", dict(rope_theta=1000000.0, max_position_embeddings=131072,
                  rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32768)), 128,
     131072),
    ("yarn_betas", dict(rope_theta=10000.0, max_position_embeddings=16384, rope_scaling=dict(
        rope_type="yarn", factor=8.0, original_max_position_embeddings=2048, beta_fast=16, beta_slow=2,
        attention_factor=1.5)), 64, 16384),
    ("llama3", dict(rope_theta=500000.0, max_position_embeddings=131072, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=8192)), 128, 131072),
]


def write_checkpoint(case, W):
    d = os.path.join(OUT, case["name"])
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(case["cfg"], f, indent=2)
        f.write("\n")
    held, entries = {}, []
    for name in W:
        dtype = case["dtype"] if W[name].ndim == 2 else "F32"
        raw, held[name] = store(W[name], dtype)
        entries.append((name, dtype, W[name].shape, raw))
    n = case.get("shards", 1)
    if n == 1:
        st_write(os.path.join(d, "model.safetensors"), entries)
        return held
    index = {"metadata": {"total_size": sum(len(e[3]) for e in entries)}, "weight_map": {}}
    for s in range(n):
        fname = "model-%05d-of-%05d.safetensors" % (s + 1, n)
        part = entries[s::n]
        st_write(os.path.join(d, fname), part)
        for e in part:
            index["weight_map"][e[0]] = fname
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return held


def write_outputs(name, tokens, logits, score):
    with open(os.path.join(OUT, name + ".tokens"), "w") as f:
        f.write(" ".join(map(str, tokens)) + "\n")
    if logits is not None:
        logits.numpy().astype("<f4").tofile(os.path.join(OUT, name + ".logits"))
    if score is not None:
        score.numpy().astype("<f4").tofile(os.path.join(OUT, name + ".score"))


def main():
    os.makedirs(OUT, exist_ok=True)
    for case in CASES:
        rng = np.random.RandomState(case["seed"])
        held = write_checkpoint(case, make_weights(case["cfg"], rng))
        W = {k: T(v) for k, v in held.items()}
        vocab = case["cfg"]["vocab_size"]
        tokens = [int(t) for t in rng.randint(0, vocab, N_TOKENS)]
        fwd = gpt2(case["cfg"], W, tokens) if case["cfg"]["model_type"] == "gpt2" else \
            llama_like(case["cfg"], W, tokens, case["cfg"]["max_position_embeddings"])
        logits, score = fwd
        if logits is not None and float(logits.std(-1).min()) < 0.3:
            sys.exit("%s: logits barely vary (std %.3f): a poor test" % (case["name"], float(logits.std(-1).min())))
        write_outputs(case["name"], tokens, logits, score)
        print("%-20s %s" % (case["name"], "score" if score is not None else "logits std %.2f" % float(logits.std())))

    with open(os.path.join(TINY_GPT2, "config.json")) as f:
        cfg = json.load(f)
    W = {k: T(v) for k, v in st_read(os.path.join(TINY_GPT2, "model.safetensors")).items()}
    tokens = [int(t) for t in np.random.RandomState(7).randint(0, cfg["vocab_size"], 10)]
    write_outputs("tiny_gpt2", tokens, gpt2(cfg, W, tokens)[0], None)
    print("tiny_gpt2 (../shared/testdata)")

    with open(os.path.join(OUT, "rope_freqs.txt"), "w") as f:
        for name, cfg, d, n_ctx in ROPE_CASES:
            inv, att = rope_inv_freq(cfg, d, n_ctx)
            f.write("%s %d %d %.17g %s\n" % (name, d, n_ctx, att, " ".join("%.17g" % v for v in inv)))
    print("rope_freqs.txt: %d cases" % len(ROPE_CASES))


if __name__ == "__main__":
    main()
