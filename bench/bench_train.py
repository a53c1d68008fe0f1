#!/usr/bin/python3
"""PyTorch peer of kiln's training benchmark (bench/bench_train.sh): the same byte-level GPT-2 (learned
positions, LayerNorm, GELU-tanh, biases, tied head), the same batch, AdamW with weight decay on
matrices, gradient clipping; random bytes as data (speed does not depend on them).

Run as PyTorch users run it at its best on this machine (../shared/PEERS.md): torch.set_num_threads(1)
with OpenBLAS using the cores; THREADS sets torch's own threads when given.

Usage: bench_train.py [--layers 6] [--dim 384] [--heads 6] [--ctx 256] [--batch 8] [--steps 10]
                      [--warmup-steps 2] [--threads 1]
Prints one JSON line: tokens/s over the timed steps, step time, CPU time per step (all threads), peak RSS.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.h)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, d, h, ctx):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(256, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(layers))
        self.lnf = nn.LayerNorm(d)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = self.lnf(x) @ self.wte.weight.T
        return F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("layers", 6), ("dim", 384), ("heads", 6), ("ctx", 256), ("batch", 8), ("steps", 10),
                          ("warmup-steps", 2), ("threads", 1)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(a.layers, a.dim, a.heads, a.ctx)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "wte" not in n and "wpe" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "wte" not in n and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    data = torch.randint(0, 256, (a.warmup_steps + a.steps, a.batch, a.ctx + 1))
    t0 = None
    for step in range(a.warmup_steps + a.steps):
        if step == a.warmup_steps:
            t0, c0 = time.perf_counter(), time.process_time()
        loss = model(data[step, :, :-1], data[step, :, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"peer": "pytorch " + torch.__version__, "params": params, "tok_s": a.steps * a.batch * a.ctx / dt,
                      "step_s": dt / a.steps, "cpu_s_per_step": dc / a.steps,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": a.threads,
                      "loss": loss.item()}))


if __name__ == "__main__":
    main()
