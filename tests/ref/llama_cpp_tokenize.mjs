// Token ids llama.cpp (npm node-llama-cpp) gives for each text of tests/golden/bpe/cases.json with the
// tokenizer of a GGUF file, compared with the ids under KEY there: scripts/check-long.sh runs it on a GGUF
// whose tokenizer kiln wrote, to show llama.cpp reads kiln's byte-level BPE keys as kiln means them.
//     NODE_MODULES=$(scripts/npm-cache.sh llama) node tests/ref/llama_cpp_tokenize.mjs MODEL.gguf KEY
import { readFileSync } from "node:fs";
const { getLlama } = await import(process.env.NODE_MODULES + "/node-llama-cpp/dist/index.js");

const [modelPath, key] = process.argv.slice(2);
const cases = JSON.parse(readFileSync("tests/golden/bpe/cases.json", "utf8"));
const llama = await getLlama({ gpu: false, build: "never" });
const model = await llama.loadModel({ modelPath, vocabOnly: true });
let bad = 0;
for (const c of cases) {
  const got = Array.from(model.tokenize(c.text, false));
  if (JSON.stringify(got) !== JSON.stringify(c[key])) {
    bad++;
    console.error("differs: " + JSON.stringify(c.text) + "\n  llama.cpp " + JSON.stringify(got) + "\n  expected  " + JSON.stringify(c[key]));
  }
}
console.log(bad ? bad + " of " + cases.length + " texts differ" : "all " + cases.length + " texts agree");
await model.dispose();
process.exit(bad ? 1 : 0);
