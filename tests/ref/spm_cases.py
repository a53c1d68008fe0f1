#!/usr/bin/python3
"""Expected Llama 2 tokenizations from sentencepiece itself, for tests/test_tokenizer.c.

Encodes each string below with Debian's python3-sentencepiece and the Llama 2 tokenizer.model (the
same vocabulary as the llama2.c tokenizer.bin kiln loads), and writes tests/golden/spm_cases.txt:
one case per line, "HEX<TAB>IDS" with HEX the UTF-8 bytes of the string in hex and IDS the expected
ids, BOS (1) first, space-separated. Lines starting with '#' show the string and are skipped.

Usage: /usr/bin/python3 tests/ref/spm_cases.py [TOKENIZER_MODEL] [OUT]
    (defaults: ../shared/testdata/llama2-tokenizer/tokenizer.model, tests/golden/spm_cases.txt)
"""
import sys

import sentencepiece

CASES = [
    "",
    "a",
    " ",
    "  ",
    "hello",
    "Hello world",
    "hello world ",
    " leading space",
    "   three leading spaces",
    "trailing spaces   ",
    "multiple   spaces\tand\ttabs",
    "line one\nline two\n",
    "\n\nblank lines\n\n",
    "\r\nwindows line end",
    "I believe the meaning of life is",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, there was a little girl named Lily.",
    "It's 3:45pm -- don't be late! (42% chance)",
    "numbers 0123456789 and 3.14159 and 1,000,000",
    "email@example.com https://example.org/path?q=1&r=2",
    "int main(void) {\n    printf(\"%d\\n\", 42);\n    return 0;\n}\n",
    "def f(x):\n\treturn x ** 2  # square\n",
    "    indented code",
    "Grüße aus München, naïve café, señor",
    "Ελληνικά και русский текст",
    "日本語のテキストと中文文本",
    "한국어 텍스트",
    "emoji 😀 and 🦙 llama 👍🏽",
    "🤖🤖🤖",
    "mixed: αβγ → ∑ ∞ ≠ ≤",
    "zero\u200bwidth and nbsp\u00a0here",
    "<s> and </s> and <unk> are text here",
    "<0x41> looks like a byte token",
    "supercalifragilisticexpialidocious",
    "antidisestablishmentarianism pneumonoultramicroscopic",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::",
    "Ünïcödé ÀÉÎÕÜ",
    "control\x01chars\x7f",
    "tab\tat\tend\t",
]


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "../shared/testdata/llama2-tokenizer/tokenizer.model"
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/golden/spm_cases.txt"
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    with open(out, "w", encoding="utf-8") as f:
        f.write("# Written by tests/ref/spm_cases.py (sentencepiece %s): HEX<TAB>IDS per case.\n"
                % sentencepiece.__version__)
        for s in CASES:
            ids = [sp.bos_id()] + sp.encode(s)
            f.write("# %s\n" % ascii(s))
            f.write("%s\t%s\n" % (s.encode("utf-8").hex(), " ".join(map(str, ids))))


if __name__ == "__main__":
    main()
