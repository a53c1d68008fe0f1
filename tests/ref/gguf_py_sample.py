"""Writes tests/golden/gguf_py_sample.gguf with llama.cpp's own writer (gguf-py), an implementation
independent of kiln's, so that tests/test_gguf.c can check kiln's reader against it.

    PYTHONPATH=~/.cache/kiln-peers/llama.cpp/gguf-py /usr/bin/python3 tests/ref/gguf_py_sample.py [OUT]

The file holds one key of every metadata value type, arrays of numbers, of strings and of arrays, and
F32, F16 and BF16 tensors with known values; alignment is 64 to check that general.alignment is honoured.
If you change a value here, change tests/test_gguf.c to match."""
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/gguf_py_sample.gguf"
w = GGUFWriter(out, arch="kilntest")  # writes general.architecture = "kilntest" first
w.add_custom_alignment(64)

w.add_uint8("t.u8", 200)
w.add_int8("t.i8", -100)
w.add_uint16("t.u16", 60000)
w.add_int16("t.i16", -30000)
w.add_uint32("t.u32", 4000000000)
w.add_int32("t.i32", -2000000000)
w.add_float32("t.f32", 0.15625)
w.add_bool("t.bool_true", True)
w.add_bool("t.bool_false", False)
w.add_string("t.str", "héllo, gguf")
w.add_key_value("t.str_empty", "", GGUFValueType.STRING)  # add_string skips empty strings
w.add_uint64("t.u64", 18000000000000000000)
w.add_int64("t.i64", -9000000000000000000)
w.add_float64("t.f64", -2.718281828459045)

w.add_key_value("t.arr_u8", [1, 2, 255], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT8)
w.add_key_value("t.arr_i16", [-1, 2, -32768], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT16)
w.add_key_value("t.arr_i32", [7, -8, 9, -10], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
w.add_key_value("t.arr_u64", [0, 1 << 63], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT64)
w.add_key_value("t.arr_f32", [0.5, -1.25, 3.0], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT32)
w.add_key_value("t.arr_f64", [1e-300, -0.1], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT64)
w.add_key_value("t.arr_bool", [True, False, True], GGUFValueType.ARRAY, sub_type=GGUFValueType.BOOL)
w.add_array("t.arr_str", ["alpha", "", "gamma"])
w.add_array("t.arr_arr", [[1, 2], [3], [4, 5, 6]])  # inner arrays of i32

# numpy shape (rows, cols) is written as ne = [cols, rows]
w.add_tensor("t.f32", (np.arange(6, dtype=np.float32) * 0.5 - 1.0).reshape(2, 3))
w.add_tensor("t.f16", np.array([1.0, -2.0, 0.5, 65504.0], dtype=np.float16))
bf16_values = np.array([[1.0, -2.5], [3.140625, 0.0]], dtype=np.float32)
w.add_tensor("t.bf16", (bf16_values.view(np.uint32) >> 16).astype(np.uint16), raw_dtype=GGMLQuantizationType.BF16)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
