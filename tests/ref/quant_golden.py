"""Writes tests/golden/quant_gguf_py.gguf with llama.cpp's gguf-py (its writer and its numpy quantizers)
and ggml's own C quantizers, independent of kiln's code, so that tests/test_quant.c can check kiln's
block formats and quantizers against them:

    PYTHONPATH=~/.cache/kiln-peers/llama.cpp/gguf-py /usr/bin/python3 tests/ref/quant_golden.py [OUT]

ggml's quantize_row_*_ref come from libggml-base.so of the llama.cpp peer build (../shared/tools/
llama-cpp-peer builds it into ~/.cache/kiln-peers/build/bin; LIBGGML_BASE overrides the path), called
through ctypes: they are what llama-quantize runs without an importance matrix.

Tensors (numpy shape rows x cols is written as ne = [cols, rows]):
    src            f32 [3, 96]   values to quantize
    q8_0, q4_0     src quantized by gguf-py's Q8_0 / Q4_0 quantizers
    q4_k, q6_k     [2, 512] blocks of random bytes with sane f16 scales (gguf-py cannot quantize these)
    NAME.deq       f32: gguf-py's dequantization of NAME
    srck           f32 [4, 512]  gaussian values with outliers
    srck.q8_0 .q4_0 .q4_k .q6_k  srck quantized by ggml's C reference quantizers
Seeds are fixed; a run gives the same bytes."""
import ctypes
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFWriter, quants

out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/quant_gguf_py.gguf"
rng = np.random.RandomState(8)

src = (rng.standard_normal((3, 96)) * 0.3).astype(np.float32)
src[0, :32] = 0.0           # an all-zero block: scale 0
src[1, 5] = 4.0             # a block with a large positive outlier
src[2, 40] = -4.0           # ... and a negative one (Q4_0 maps it to -8)

w = GGUFWriter(out, arch="kilntest")
w.add_tensor("src", src)
for name, qt in (("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0)):
    q = quants.quantize(src, qt)
    w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qt)
    w.add_tensor(name + ".deq", quants.dequantize(q, qt).astype(np.float32))


def random_blocks(qt, rows, cols, f16_fields):
    """Random block bytes, then the f16 fields (byte offsets within a block) set to small scales."""
    bsize, tsize = quants.GGML_QUANT_SIZES[qt]
    nblk = rows * cols // bsize
    raw = rng.randint(0, 256, size=(nblk, tsize), dtype=np.uint8)
    for off in f16_fields:
        scale = (rng.uniform(0.001, 0.05, size=nblk)).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(nblk, 2)
    return raw.reshape(rows, cols // bsize * tsize)


for name, qt, fields in (("q4_k", Q.Q4_K, (0, 2)), ("q6_k", Q.Q6_K, (208,))):
    q = random_blocks(qt, 2, 512, fields)
    w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qt)
    w.add_tensor(name + ".deq", quants.dequantize(q, qt).astype(np.float32))

lib = ctypes.CDLL(os.environ.get("LIBGGML_BASE", os.path.expanduser("~/.cache/kiln-peers/build/bin/libggml-base.so")))
srck = (rng.standard_normal((4, 512)) * 0.02).astype(np.float32)
srck[rng.randint(0, 4, 12), rng.randint(0, 512, 12)] *= 8
w.add_tensor("srck", srck)
for name, qt, fn in (("q8_0", Q.Q8_0, lib.quantize_row_q8_0_ref), ("q4_0", Q.Q4_0, lib.quantize_row_q4_0_ref),
                     ("q4_k", Q.Q4_K, lib.quantize_row_q4_K_ref), ("q6_k", Q.Q6_K, lib.quantize_row_q6_K_ref)):
    bsize, tsize = quants.GGML_QUANT_SIZES[qt]
    out = np.zeros((4, 512 // bsize * tsize), dtype=np.uint8)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn(srck.ctypes.data, out.ctypes.data, srck.size)
    w.add_tensor("srck." + name, out, raw_shape=out.shape, raw_dtype=qt)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
