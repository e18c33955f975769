// Runs the Vercel AI SDK's own client code against an ngai_chat server's POST /chat:
// DefaultChatTransport (sendMessages, reconnectToStream) and readUIMessageStream of the
// `ai` package, version 5, 6 or 7 (npm aliases ai5, ai6, ai7 in package.json), and
// prints one JSON line with what the SDK assembled.
//
//   node tests/node_ai/ui_client.mjs <5|6|7> <base_url> <mode> <json request>
//
// Modes (request: {"chatId", "messages", "trigger"?, "messageId"?, "body"?,
// "headers"?, "abortAfter"?}):
//   send     sendMessages, read the whole stream: {"message", "chunks", "errors"}
//   resume   reconnectToStream: {"resumed": false} on 204, else as `send`
//   abort    sendMessages, abort the fetch once `abortAfter` text-delta chunks came,
//            then reconnectToStream and read the resumed stream:
//            {"partial": <message when aborted>, "resumed": true, "message", ...}
// A request the server refuses: {"thrown": "<the Error's message>"}.
//
// Every chunk passes the SDK's own schema validation (the transport parses the
// stream with its uiMessageChunkSchema); "chunks" lists their types in order.

const [version, baseUrl, mode, requestJson] = process.argv.slice(2);
if (!['5', '6', '7'].includes(version) || !baseUrl || !mode || !requestJson) {
  process.stderr.write('usage: node ui_client.mjs <5|6|7> <base_url> <send|resume|abort> <json>\n');
  process.exit(2);
}
const ai = await import(`ai${version}`);
const request = JSON.parse(requestJson);
const transport = new ai.DefaultChatTransport({
  api: baseUrl.replace(/\/+$/, '') + '/chat',
  headers: request.headers,
  body: request.body,
});

function recording(stream, chunks) {
  return stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks.push(chunk.type);
        controller.enqueue(chunk);
      },
    }),
  );
}

async function read(stream, { onChunk } = {}) {
  const chunks = [];
  const errors = [];
  let message = null;
  const recorded = recording(stream, chunks);
  for await (const snapshot of ai.readUIMessageStream({
    stream: recorded,
    onError: (error) => errors.push(String(error?.message ?? error)),
  })) {
    message = snapshot;
    if (onChunk && onChunk(chunks, message)) break;
  }
  return { message, chunks, errors };
}

async function main() {
  const options = {
    chatId: request.chatId,
    messages: request.messages,
    trigger: request.trigger ?? 'submit-message',
    messageId: request.messageId,
    abortSignal: undefined,
  };
  if (mode === 'send') {
    return read(await transport.sendMessages(options));
  }
  if (mode === 'resume') {
    const stream = await transport.reconnectToStream({ chatId: request.chatId });
    if (stream == null) return { resumed: false };
    return { resumed: true, ...(await read(stream)) };
  }
  if (mode === 'abort') {
    const controller = new AbortController();
    const stream = await transport.sendMessages({ ...options, abortSignal: controller.signal });
    let partial = null;
    try {
      const first = await read(stream, {
        onChunk: (chunks, message) => {
          if (chunks.filter((type) => type === 'text-delta').length >= request.abortAfter) {
            partial = structuredClone(message);
            controller.abort();
            return true;
          }
          return false;
        },
      });
      partial = partial ?? first.message;
    } catch (error) {
      if (error?.name !== 'AbortError') throw error;
    }
    const resumedStream = await transport.reconnectToStream({ chatId: request.chatId });
    if (resumedStream == null) return { partial, resumed: false };
    return { partial, resumed: true, ...(await read(resumedStream)) };
  }
  throw new Error(`unknown mode ${mode}`);
}

let result;
try {
  result = await main();
} catch (error) {
  result = { thrown: String(error?.message ?? error) };
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
