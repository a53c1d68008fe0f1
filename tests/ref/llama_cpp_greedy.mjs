// Greedy text of a GGUF model in llama.cpp (through npm node-llama-cpp's prebuilt binaries): 200 tokens
// from BOS at temperature 0, printed to stdout with no newline. scripts/check-long.sh compares it with what
// llama2.c and kiln produce for stories260K.
//     NODE_MODULES=$(scripts/npm-cache.sh) node tests/ref/llama_cpp_greedy.mjs MODEL.gguf [N_TOKENS]
const { getLlama } = await import(process.env.NODE_MODULES + "/node-llama-cpp/dist/index.js");

const [modelPath, nArg] = process.argv.slice(2);
const n = Number(nArg ?? 200);
const llama = await getLlama({ gpu: false, build: "never" });
const model = await llama.loadModel({ modelPath });
// one thread: on a busy machine llama.cpp's spinning worker threads crawl
const context = await model.createContext({ contextSize: 512, threads: 1 });
const sequence = context.getSequence();
const out = [];
for await (const token of sequence.evaluate([model.tokens.bos], { temperature: 0 })) {
  out.push(token);
  if (out.length >= n) break;
}
process.stdout.write(model.detokenize(out));
await context.dispose();
await model.dispose();
