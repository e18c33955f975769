// The benchmark's Node/Express baseline: a typical two-step SSE chat relay, the
// kind issue 7 compares ngai_chat with. In-memory session map; POST /prepare
// stores the request, GET /stream/:id makes the upstream request with fetch(),
// splits the upstream's SSE events, JSON.parse()s each chunk and re-emits it as
// `event: chunk` (the chunk plus a top-level "content", as ngai_chat does), then
// `done`. No event log, no resume, no fan-out: the floor a simple relay costs.
//
//   UPSTREAM_BASE_URL=http://127.0.0.1:8099/api/v1 PORT=0 node server.js
//
// It prints `listening <port>` on its first line once it accepts connections,
// and stops on SIGTERM or SIGINT. It listens on 127.0.0.1 only.

import { randomUUID } from "node:crypto";
import express from "express";

const upstream = `${process.env.UPSTREAM_BASE_URL ?? "http://127.0.0.1:8099/api/v1"}/chat/completions`;
const apiKey = process.env.OPENROUTER_API_KEY ?? "bench-key";
const sessions = new Map();

const app = express();
app.disable("x-powered-by");
app.use(express.json({ limit: "1mb" }));

function jsonError(res, status, code, message) {
  res.status(status).json({ error: { code, message, status } });
}

app.post("/prepare", (req, res) => {
  const { model, messages } = req.body ?? {};
  if (typeof model !== "string" || !model) {
    return jsonError(res, 400, "invalid_request", "model: a non-empty string is required");
  }
  if (!Array.isArray(messages) || messages.length === 0) {
    return jsonError(res, 400, "invalid_request", "messages: a non-empty list is required");
  }
  const sessionId = randomUUID();
  sessions.set(sessionId, { model, messages });
  res.json({ sessionId, streamUrl: `/stream/${sessionId}` });
});

function send(res, id, event, data) {
  res.write(`id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

app.get("/stream/:id", async (req, res) => {
  res.writeHead(200, {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
  });
  res.write("retry: 3000\n: ok\n\n");
  let eventId = 0;
  const session = sessions.get(req.params.id);
  if (session === undefined) {
    send(res, ++eventId, "error", { code: "session_not_found", message: "no such session" });
    return res.end();
  }
  sessions.delete(req.params.id);
  const aborter = new AbortController();
  res.on("close", () => aborter.abort());
  let finishReason = null;
  let model = session.model;
  let usage = null;
  try {
    const response = await fetch(upstream, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
      body: JSON.stringify({ model: session.model, messages: session.messages, stream: true }),
      signal: aborter.signal,
    });
    if (!response.ok) {
      send(res, ++eventId, "error", { code: "upstream_error", message: `upstream ${response.status}` });
      return res.end();
    }
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const bytes of response.body) {
      buffer += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue; // a comment such as ": OPENROUTER PROCESSING"
        if (data === "[DONE]") {
          send(res, ++eventId, "done", { finishReason, model, usage });
          return res.end();
        }
        const chunk = JSON.parse(data);
        const choice = chunk.choices?.[0];
        finishReason = choice?.finish_reason ?? finishReason;
        model = chunk.model ?? model;
        usage = chunk.usage ?? usage;
        send(res, ++eventId, "chunk", { ...chunk, content: choice?.delta?.content ?? "" });
      }
    }
    send(res, ++eventId, "done", { finishReason, model, usage });
  } catch (err) {
    if (aborter.signal.aborted) return; // the client left
    send(res, ++eventId, "error", { code: "upstream_error", message: String(err) });
  }
  res.end();
});

const server = app.listen(Number(process.env.PORT ?? 0), "127.0.0.1", 4096, () => {
  console.log(`listening ${server.address().port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
