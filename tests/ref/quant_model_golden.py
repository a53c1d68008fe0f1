"""Writes small llama models whose matrices gguf-py quantized, with gguf-py's writer, so that
tests/test_quant_model.c can check that kiln loads and runs files it did not write:

    PYTHONPATH=~/.cache/kiln-peers/llama.cpp/gguf-py /usr/bin/python3 tests/ref/quant_model_golden.py

tests/golden/quant_llama_q8_0.gguf and quant_llama_q4_0.gguf: the same random weights (dim 64, 2 layers,
4 heads of 16, 2 kv heads, ffn 128, vocab 96, context 64), every matrix Q8_0 or Q4_0 (gguf-py's numpy
quantizers), norms F32. No tokenizer. Seeds are fixed; a run gives the same bytes."""
import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFWriter, quants

DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB, CTX = 64, 2, 4, 2, 128, 96, 64
HEAD = DIM // HEADS


def weights():
    rng = np.random.RandomState(81)
    m = lambda rows, cols: (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
    norm = lambda: (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)
    t = [("token_embd.weight", m(VOCAB, DIM)), ("output_norm.weight", norm()), ("output.weight", m(VOCAB, DIM))]
    for l in range(LAYERS):
        p = "blk.%d." % l
        t += [(p + "attn_norm.weight", norm()), (p + "attn_q.weight", m(DIM, DIM)),
              (p + "attn_k.weight", m(KV_HEADS * HEAD, DIM)), (p + "attn_v.weight", m(KV_HEADS * HEAD, DIM)),
              (p + "attn_output.weight", m(DIM, DIM)), (p + "ffn_norm.weight", norm()),
              (p + "ffn_gate.weight", m(FFN, DIM)), (p + "ffn_up.weight", m(FFN, DIM)),
              (p + "ffn_down.weight", m(DIM, FFN))]
    return t


for name, qt in (("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0)):
    w = GGUFWriter("tests/golden/quant_llama_%s.gguf" % name, arch="llama")
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(7 if qt == Q.Q8_0 else 2)
    for tname, x in weights():
        if x.ndim == 2:
            q = quants.quantize(x, qt)
            w.add_tensor(tname, q, raw_shape=q.shape, raw_dtype=qt)
        else:
            w.add_tensor(tname, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
