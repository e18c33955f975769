// Calls ngai_chat's /v1 door with the official `openai` npm package, as its README
// shows: one streamed and one non-streamed chat completion, then prints one JSON
// line with what the client saw. Usage: node openai_client.mjs <baseURL> <apiKey> <model>
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });
const messages = [{ role: "user", content: "Hello from Node" }];

const stream = await client.chat.completions.create({ model, messages, stream: true });
let streamed = "";
let finish = null;
let usage = null;
for await (const chunk of stream) {
  const choice = chunk.choices[0];
  if (choice) {
    streamed += choice.delta.content ?? "";
    finish = choice.finish_reason ?? finish;
  }
  if (chunk.usage) usage = chunk.usage;
}

const completion = await client.chat.completions.create({ model, messages });

let refused = null;
try {
  await new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).chat.completions.create({ model, messages });
} catch (error) {
  refused = { name: error.constructor.name, status: error.status, code: error.code };
}

console.log(
  JSON.stringify({
    streamed,
    finish,
    usage,
    completion: {
      id: completion.id,
      object: completion.object,
      content: completion.choices[0].message.content,
      finish: completion.choices[0].finish_reason,
      usage: completion.usage,
    },
    refused,
  }),
);
