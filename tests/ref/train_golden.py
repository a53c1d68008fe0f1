#!/usr/bin/python3
"""kiln's independent reference for training: PyTorch (Debian's python3-torch) in float32.

For a tiny GPT-2 and a tiny llama it computes, from weights drawn here with numpy, the logits and
loss of one batch, the gradient of every parameter, and then ten AdamW steps (warmup + cosine
learning rate, weight decay on matrices only, gradient clipping, two micro-batches accumulated per
step), recording each step's loss and the final parameters. tests/test_train_golden.c checks kiln's
trainer against these numbers.

The model is written from the math, not from kiln's code: PyTorch's own autograd computes the
gradients, torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ do the update.

Output, tests/golden/train_NAME.bin: "KTG1", u32 count, then COUNT entries of
(u32 name length, name, u32 n, n little-endian f32). Entries: config (see CONFIG_FIELDS), param.TENSOR
(the starting weights, one entry per tensor), tokens
(B x (T+1): inputs are the first T of each row, targets the last T), logits, loss, grad.TENSOR for
every tensor, steps.tokens (STEPS x ACCUM x B x (T+1)), steps.lr, steps.loss, final.TENSOR.

Usage: /usr/bin/python3 tests/ref/train_golden.py     (same files every run: seeds are fixed)
"""
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

CONFIG_FIELDS = ["is_gpt2", "n_vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "ctx_len",
                 "tied", "B", "T", "steps", "accum", "warmup", "lr", "min_lr_ratio", "beta1", "beta2", "eps",
                 "weight_decay", "clip", "rope_theta", "norm_eps"]

CASES = {
    "gpt2": dict(is_gpt2=1, n_vocab=64, dim=16, n_layers=2, n_heads=2, n_kv_heads=2, head_dim=8, ffn_dim=64,
                 ctx_len=8, tied=1),
    "llama": dict(is_gpt2=0, n_vocab=64, dim=24, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=6, ffn_dim=32,
                  ctx_len=8, tied=0),
}
COMMON = dict(B=2, T=8, steps=10, accum=2, warmup=3, lr=1e-2, min_lr_ratio=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
              weight_decay=0.1, clip=1.0, rope_theta=10000.0, norm_eps=1e-5)


def tensor_shapes(c):
    """(name, shape, decays, init) in kiln's order; init is a std or ('const', value)."""
    d, q, kv, f = c["dim"], c["n_heads"] * c["head_dim"], c["n_kv_heads"] * c["head_dim"], c["ffn_dim"]
    gpt2 = c["is_gpt2"]
    out = [("token_embd.weight", (c["n_vocab"], d), False, 0.02)]
    if gpt2:
        out.append(("position_embd.weight", (c["ctx_len"], d), False, 0.01))
    res = 0.02 / math.sqrt(2 * c["n_layers"])
    for l in range(c["n_layers"]):
        b = "blk.%d." % l
        out.append((b + "attn_norm.weight", (d,), False, ("const", 1.0)))
        if gpt2:
            out += [(b + "attn_norm.bias", (d,), False, ("const", 0.0)),
                    (b + "attn_qkv.weight", (q + 2 * kv, d), True, 0.02),
                    (b + "attn_qkv.bias", (q + 2 * kv,), False, ("const", 0.0))]
        else:
            out += [(b + "attn_q.weight", (q, d), True, 0.02), (b + "attn_k.weight", (kv, d), True, 0.02),
                    (b + "attn_v.weight", (kv, d), True, 0.02)]
        out.append((b + "attn_output.weight", (d, q), True, res))
        if gpt2:
            out.append((b + "attn_output.bias", (d,), False, ("const", 0.0)))
        out.append((b + "ffn_norm.weight", (d,), False, ("const", 1.0)))
        if gpt2:
            out.append((b + "ffn_norm.bias", (d,), False, ("const", 0.0)))
        else:
            out.append((b + "ffn_gate.weight", (f, d), True, 0.02))
        out.append((b + "ffn_up.weight", (f, d), True, 0.02))
        if gpt2:
            out.append((b + "ffn_up.bias", (f,), False, ("const", 0.0)))
        out.append((b + "ffn_down.weight", (d, f), True, res))
        if gpt2:
            out.append((b + "ffn_down.bias", (d,), False, ("const", 0.0)))
    out.append(("output_norm.weight", (d,), False, ("const", 1.0)))
    if gpt2:
        out.append(("output_norm.bias", (d,), False, ("const", 0.0)))
    if not c["tied"]:
        out.append(("output.weight", (c["n_vocab"], d), True, 0.02))
    return out


def make_params(c, rng):
    """Random weights; norms and biases are perturbed too so that every gradient path is exercised."""
    params = {}
    for name, shape, _, init in tensor_shapes(c):
        if isinstance(init, tuple):
            v = init[1] + 0.1 * rng.standard_normal(shape)
        else:
            v = 10 * init * rng.standard_normal(shape)
        params[name] = torch.tensor(v.astype(np.float32), requires_grad=True)
    return params


def rope(x, theta):
    """Interleaved rotary embedding (llama in GGUF): pairs (x[2i], x[2i+1]) of each head rotate by
    t * theta^(-2i/hd). x: (B, T, heads, hd)."""
    T, hd = x.shape[1], x.shape[3]
    i = np.arange(hd // 2)
    ang = np.arange(T)[:, None] * np.power(float(theta), -2.0 * i / hd)[None, :]
    cos = torch.tensor(np.cos(ang).astype(np.float32))[None, :, None, :]
    sin = torch.tensor(np.sin(ang).astype(np.float32))[None, :, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(x.shape)


def forward(c, p, tokens):
    """Logits (B, T, V) of the inputs tokens[:, :-1]."""
    gpt2, eps = c["is_gpt2"], c["norm_eps"]
    inp = tokens[:, :-1]
    B, T = inp.shape
    H, KVH, hd, d = c["n_heads"], c["n_kv_heads"], c["head_dim"], c["dim"]

    def norm(x, w, b):
        if gpt2:
            return F.layer_norm(x, (d,), w, b, eps)
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w

    x = p["token_embd.weight"][inp]
    if gpt2:
        x = x + p["position_embd.weight"][:T][None]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(c["n_layers"]):
        b = "blk.%d." % l
        h = norm(x, p[b + "attn_norm.weight"], p.get(b + "attn_norm.bias"))
        if gpt2:
            qkv = h @ p[b + "attn_qkv.weight"].T + p[b + "attn_qkv.bias"]
        else:
            qkv = h @ torch.cat([p[b + "attn_q.weight"], p[b + "attn_k.weight"], p[b + "attn_v.weight"]]).T
        q = qkv[..., :H * hd].reshape(B, T, H, hd)
        k = qkv[..., H * hd:(H + KVH) * hd].reshape(B, T, KVH, hd)
        v = qkv[..., (H + KVH) * hd:].reshape(B, T, KVH, hd)
        if not gpt2:
            q, k = rope(q, c["rope_theta"]), rope(k, c["rope_theta"])
        rep = H // KVH
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
        a = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
        o = torch.einsum("bhts,bshd->bthd", a, v).reshape(B, T, H * hd)
        o = o @ p[b + "attn_output.weight"].T
        if gpt2:
            o = o + p[b + "attn_output.bias"]
        x = x + o
        h = norm(x, p[b + "ffn_norm.weight"], p.get(b + "ffn_norm.bias"))
        if gpt2:
            m = F.gelu(h @ p[b + "ffn_up.weight"].T + p[b + "ffn_up.bias"], approximate="tanh")
        else:
            m = F.silu(h @ p[b + "ffn_gate.weight"].T) * (h @ p[b + "ffn_up.weight"].T)
        m = m @ p[b + "ffn_down.weight"].T
        if gpt2:
            m = m + p[b + "ffn_down.bias"]
        x = x + m
    x = norm(x, p["output_norm.weight"], p.get("output_norm.bias"))
    head = p["token_embd.weight"] if c["tied"] else p["output.weight"]
    return x @ head.T


def loss_of(c, p, tokens):
    logits = forward(c, p, tokens)
    return logits, F.cross_entropy(logits.reshape(-1, c["n_vocab"]), tokens[:, 1:].reshape(-1))


def lr_at(c, step):
    if step < c["warmup"]:
        return c["lr"] * (step + 1) / c["warmup"]
    progress = min(1.0, (step - c["warmup"]) / max(1, c["steps"] - 1 - c["warmup"]))
    lo = c["lr"] * c["min_lr_ratio"]
    return lo + 0.5 * (c["lr"] - lo) * (1 + math.cos(math.pi * progress))


def run_case(name, c):
    rng = np.random.default_rng(1234 + len(name))
    torch.manual_seed(0)
    p = make_params(c, rng)
    B, T, V = c["B"], c["T"], c["n_vocab"]
    entries = [("config", [float(c[k]) for k in CONFIG_FIELDS])]
    entries += [("param." + n, t.detach().flatten().tolist()) for n, t in p.items()]
    tokens = torch.tensor(rng.integers(0, V, size=(B, T + 1)))
    logits, loss = loss_of(c, p, tokens)
    loss.backward()
    entries += [("tokens", tokens.flatten().tolist()), ("logits", logits.detach().flatten().tolist()),
                ("loss", [loss.item()])]
    shapes = tensor_shapes(c)
    entries += [("grad." + n, p[n].grad.flatten().tolist()) for n, _, _, _ in shapes]

    for t in p.values():
        t.grad = None
    decay = [p[n] for n, _, dec, _ in shapes if dec]
    no_decay = [p[n] for n, _, dec, _ in shapes if not dec]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"])
    step_tokens = torch.tensor(rng.integers(0, V, size=(c["steps"], c["accum"], B, T + 1)))
    losses, lrs = [], []
    for step in range(c["steps"]):
        lr = lr_at(c, step)
        for g in opt.param_groups:
            g["lr"] = lr
        total = 0.0
        for micro in range(c["accum"]):
            _, loss = loss_of(c, p, step_tokens[step, micro])
            (loss / c["accum"]).backward()
            total += loss.item() / c["accum"]
        torch.nn.utils.clip_grad_norm_(list(p.values()), c["clip"])
        opt.step()
        opt.zero_grad()
        losses.append(total)
        lrs.append(lr)
    entries += [("steps.tokens", step_tokens.flatten().tolist()), ("steps.lr", lrs), ("steps.loss", losses)]
    entries += [("final." + n, p[n].detach().flatten().tolist()) for n, _, _, _ in shapes]
    return entries


def write(path, entries):
    out = b"KTG1" + struct.pack("<I", len(entries))
    for name, values in entries:
        nb = name.encode()
        out += struct.pack("<I", len(nb)) + nb + struct.pack("<I", len(values))
        out += np.asarray(values, dtype="<f4").tobytes()
    with open(path, "wb") as f:
        f.write(out)


def main():
    torch.set_num_threads(1)
    here = os.path.dirname(os.path.abspath(__file__))
    for name, case in CASES.items():
        c = dict(case, **COMMON)
        path = os.path.join(here, "..", "golden", "train_%s.bin" % name)
        write(path, run_case(name, c))
        print("wrote", os.path.relpath(path))


if __name__ == "__main__":
    main()
