// Runs the seed NGAI README's client code, unchanged, against an ngai_chat server
// in Node with a real WHATWG EventSource (the `eventsource` npm package), and prints
// one JSON line with what the code saw.
//
//   node tests/node/seed_client.mjs <base_url> <mode> <arg> [message]
//
// Modes (the seed README is /work/shared/seed/000_8025986dbcfb6dc3.txt):
//   example <model> [message]  POST /prepare with fetch, then the README's "Example
//                              Client Code" block verbatim (console.log per chunk,
//                              `done` closes, `error` logs JSON.parse(e.data)).
//   stream <sessionId>         the same "Example Client Code" block on a given
//                              session id, without /prepare (unknown sessions...).
//   chat <model> [message]     the README's `chatWithAI(message)` ("Frontend
//                              Integration") verbatim: data.choices?.[0]?.delta?.content.
//   content <model> [message]  chatWithAI as the seed server's own clients write it:
//                              data.content.
//
// The only substitutions made in the README's code: `http://localhost:3000` becomes
// the given base URL, chatWithAI's literal model becomes the given model (the README's
// 'mistralai/mistral-7b-instruct:free' when the argument is "-"), and
// `document.getElementById('response').textContent = fullResponse` stores into
// `ui.response`. console.log/console.error are captured (the example block reports
// through them) and echoed to stderr; stdout carries only the final JSON line.
//
// Observation without changing the code's behaviour: globalThis.EventSource is a thin
// subclass of the package's EventSource that records every connection (the fetch it
// makes, the Last-Event-ID it sends, the HTTP status), every event, the readyState, and
// any exception thrown by a listener. A listener exception is recorded, not rethrown:
// that is what a browser does too (it reports "Uncaught SyntaxError" in the console and
// goes on dispatching), whereas Node would turn it into a process crash.
//
// The script ends by itself once every EventSource is CLOSED and stays so for a short
// grace period; after NGAI_NODE_CLIENT_TIMEOUT_MS (default 20000) it gives up, closes
// everything and reports "timedOut": true. Exit status 0 whenever the JSON line was
// printed, 2 on bad usage.

import { EventSource as PackageEventSource } from 'eventsource';

const USAGE =
  'usage: node seed_client.mjs <base_url> <example|chat|content> <model> [message]\n' +
  '       node seed_client.mjs <base_url> stream <sessionId>';
const SEED_MODEL = 'mistralai/mistral-7b-instruct:free';
const DEFAULT_MESSAGE = 'Hello, how are you?';
const TIMEOUT_MS = Number(process.env.NGAI_NODE_CLIENT_TIMEOUT_MS || 20000);
const GRACE_MS = Number(process.env.NGAI_NODE_CLIENT_GRACE_MS || 300);

const [baseArg, mode, arg, messageArg] = process.argv.slice(2);
if (!baseArg || !['example', 'stream', 'chat', 'content'].includes(mode) || !arg) {
  process.stderr.write(USAGE + '\n');
  process.exit(2);
}
const BASE_URL = baseArg.replace(/\/+$/, '');
const MODEL = arg === '-' ? SEED_MODEL : arg;
const MESSAGE = messageArg ?? DEFAULT_MESSAGE;
const started = performance.now();
const elapsed = () => Math.round(performance.now() - started);

// ---------------------------------------------------------------- observation ---

const result = {
  mode,
  baseUrl: BASE_URL,
  model: mode === 'stream' ? null : MODEL,
  message: mode === 'stream' ? null : MESSAGE,
  sessionId: mode === 'stream' ? arg : null,
  prepare: null, // {status, body} of the POST /prepare made by this script or chatWithAI
  text: null, // what the seed code accumulated / logged from chunk events
  chunkEvents: 0,
  chunkLogs: [], // example/stream: console.log output of each chunk event
  doneEvents: 0,
  doneData: [], // parsed `done` data (JSON.parse here, not by the seed code)
  errorEvents: [], // every `error` event: server events (with data) and connection errors
  serverErrors: [], // what the seed code's JSON.parse(e.data) produced for server error events
  listenerExceptions: [], // exceptions thrown by the seed code's listeners
  otherEvents: [], // events with other names (none expected)
  eventIds: [], // lastEventId of every MessageEvent, in order
  connections: [], // one per HTTP request EventSource made
  eventSources: 0,
  readyState: null, // of the last EventSource at the end (2 = CLOSED)
  closed: false,
  timedOut: false,
  exception: null, // anything else that went wrong (fetch failure, uncaught error)
  uncaught: [],
  consoleLines: [],
  elapsedMs: null,
  notes: [],
};

const instances = [];
let dispatching = null; // the event type whose seed listener runs right now

function describeError(err) {
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: typeof err, message: String(err) };
}

function capture(kind) {
  return (...args) => {
    result.consoleLines.push({ kind, during: dispatching, args: toJsonSafe(args) });
    if (kind === 'log' && dispatching === 'chunk') result.chunkLogs.push(args[0]);
    if (kind === 'error' && dispatching === 'error' && args.length > 1) {
      result.serverErrors.push(toJsonSafe(args[1]));
    }
    process.stderr.write(`[console.${kind}] ${args.map(show).join(' ')}\n`);
  };
}

function show(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function toJsonSafe(value) {
  try {
    return JSON.parse(JSON.stringify(value ?? null));
  } catch {
    return String(value);
  }
}

console.log = capture('log');
console.error = capture('error');

const originalFetch = globalThis.fetch;

// Records the POST /prepare that chatWithAI makes with the global fetch.
globalThis.fetch = async function recordingFetch(url, init) {
  const response = await originalFetch(url, init);
  if (init?.method === 'POST' && new URL(String(url)).pathname.endsWith('/prepare')) {
    const entry = { status: response.status, contentType: response.headers.get('content-type') };
    result.prepare = entry;
    response
      .clone()
      .json()
      .then(
        (body) => {
          entry.body = body;
          if (typeof body?.sessionId === 'string') result.sessionId = body.sessionId;
        },
        (err) => {
          entry.bodyError = describeError(err);
        },
      );
  }
  return response;
};

function observingFetch(url, init) {
  const headers = init?.headers ?? {};
  const entry = {
    at: elapsed(),
    url: String(url),
    lastEventId: headers['Last-Event-ID'] ?? null,
    status: null,
    contentType: null,
    fetchError: null,
  };
  result.connections.push(entry);
  return originalFetch(url, init).then(
    (response) => {
      entry.status = response.status;
      entry.contentType = response.headers.get('content-type');
      return response;
    },
    (err) => {
      if (err?.name !== 'AbortError') entry.fetchError = describeError(err);
      throw err;
    },
  );
}

class ObservedEventSource extends PackageEventSource {
  #wrapped = new WeakMap();

  constructor(url, init) {
    super(url, { ...init, fetch: observingFetch });
    instances.push(this);
    result.eventSources += 1;
    // Registered before the seed code's listeners, so they run first.
    for (const type of ['open', 'chunk', 'done', 'error', 'message']) {
      super.addEventListener(type, (event) => this.#record(event));
    }
  }

  #record(event) {
    const isMessage = typeof MessageEvent !== 'undefined' && event instanceof MessageEvent;
    if (isMessage) result.eventIds.push(event.lastEventId);
    switch (event.type) {
      case 'open':
        return;
      case 'chunk':
        result.chunkEvents += 1;
        return;
      case 'done':
        result.doneEvents += 1;
        result.doneData.push(parseOrRaw(event.data));
        return;
      case 'error':
        result.errorEvents.push({
          at: elapsed(),
          // a server `event: error` is a MessageEvent with JSON data; a connection error
          // (stream ended, network error, non-200, 204) is an ErrorEvent without data
          kind: isMessage ? 'server-event' : 'connection-error',
          data: event.data === undefined ? null : event.data,
          dataIsUndefined: event.data === undefined,
          lastEventId: isMessage ? event.lastEventId : null,
          code: event.code ?? null,
          message: isMessage ? null : (event.message ?? null),
          readyState: this.readyState,
        });
        return;
      default:
        result.otherEvents.push({ type: event.type, data: event.data ?? null });
    }
  }

  addEventListener(type, listener, options) {
    const wrapped = (event) => {
      const before = dispatching;
      dispatching = type;
      try {
        return typeof listener === 'function' ? listener.call(this, event) : listener.handleEvent(event);
      } catch (err) {
        result.listenerExceptions.push({
          event: type,
          eventKind:
            typeof MessageEvent !== 'undefined' && event instanceof MessageEvent
              ? 'server-event'
              : 'connection-error',
          eventData: event.data === undefined ? null : event.data,
          readyState: this.readyState,
          ...describeError(err),
        });
        process.stderr.write(`[listener '${type}' threw] ${err}\n`);
        return undefined;
      } finally {
        dispatching = before;
      }
    };
    this.#wrapped.set(listener, wrapped);
    super.addEventListener(type, wrapped, options);
  }

  removeEventListener(type, listener, options) {
    super.removeEventListener(type, this.#wrapped.get(listener) ?? listener, options);
  }
}

function parseOrRaw(data) {
  try {
    return JSON.parse(data);
  } catch {
    return data === undefined ? null : data;
  }
}

globalThis.EventSource = ObservedEventSource;

process.on('uncaughtException', (err) => {
  result.uncaught.push(describeError(err));
  process.stderr.write(`[uncaught] ${err?.stack ?? err}\n`);
});
process.on('unhandledRejection', (err) => {
  result.uncaught.push(describeError(err));
  process.stderr.write(`[unhandled rejection] ${err?.stack ?? err}\n`);
});

// ------------------------------------------------------ the seed README's code ---

const ui = { response: '' }; // stands in for document.getElementById('response')

// "Example Client Code" (API Reference, 2. Stream Responses), verbatim.
function exampleClientCode(sessionId) {
  const es = new EventSource(`${BASE_URL}/stream/${sessionId}`);

  es.addEventListener('chunk', (e) => {
    const data = JSON.parse(e.data);
    console.log(data.choices[0]?.delta?.content || '');
  });

  es.addEventListener('done', () => {
    console.log('Stream completed');
    es.close();
  });

  es.addEventListener('error', (e) => {
    console.error('Error:', JSON.parse(e.data));
  });
}

// "Frontend Integration" (Usage Example), verbatim.
async function chatWithAI(message) {
  // Step 1: Create session
  const prepResponse = await fetch(`${BASE_URL}/prepare`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({
      model: MODEL,
      messages: [{role: 'user', content: message}]
    })
  });

  const {sessionId} = await prepResponse.json();

  // Step 2: Stream response
  const eventSource = new EventSource(`${BASE_URL}/stream/${sessionId}`);
  let fullResponse = '';

  eventSource.addEventListener('chunk', (event) => {
    const data = JSON.parse(event.data);
    const chunk = data.choices?.[0]?.delta?.content || '';
    fullResponse += chunk;
    // Update UI with new chunk
    ui.response = fullResponse;
  });

  eventSource.addEventListener('done', () => {
    eventSource.close();
    console.log('Conversation complete');
  });

  eventSource.addEventListener('error', (error) => {
    console.error('Stream error:', JSON.parse(error.data));
    eventSource.close();
  });
}

// chatWithAI as the seed server's own clients read chunks: `data.content`.
async function chatWithAIContent(message) {
  const prepResponse = await fetch(`${BASE_URL}/prepare`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({
      model: MODEL,
      messages: [{role: 'user', content: message}]
    })
  });

  const {sessionId} = await prepResponse.json();

  const eventSource = new EventSource(`${BASE_URL}/stream/${sessionId}`);
  let fullResponse = '';

  eventSource.addEventListener('chunk', (event) => {
    const data = JSON.parse(event.data);
    const chunk = data.content || '';
    fullResponse += chunk;
    ui.response = fullResponse;
  });

  eventSource.addEventListener('done', () => {
    eventSource.close();
    console.log('Conversation complete');
  });

  eventSource.addEventListener('error', (error) => {
    console.error('Stream error:', JSON.parse(error.data));
    eventSource.close();
  });
}

// ------------------------------------------------------------------- driver ---

async function prepareForExample() {
  const response = await fetch(`${BASE_URL}/prepare`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: MESSAGE }] }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`POST /prepare answered ${response.status}: ${JSON.stringify(body)}`);
  return body.sessionId;
}

function allClosed() {
  return instances.length > 0 && instances.every((es) => es.readyState === PackageEventSource.CLOSED);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitForEnd() {
  const deadline = performance.now() + TIMEOUT_MS;
  for (;;) {
    if (allClosed()) {
      const connections = result.connections.length;
      await sleep(GRACE_MS); // nothing may happen after CLOSED: no reconnect, no event
      if (allClosed() && result.connections.length === connections) return;
      continue;
    }
    if (performance.now() > deadline) {
      result.timedOut = true;
      for (const es of instances) es.close();
      return;
    }
    await sleep(20);
  }
}

function finish() {
  const last = instances.at(-1);
  result.readyState = last ? last.readyState : null;
  result.closed = allClosed();
  if (mode === 'example' || mode === 'stream') {
    result.text = result.chunkLogs.join('');
  } else {
    result.text = ui.response;
  }
  const connectionErrors = result.errorEvents.filter((e) => e.kind === 'connection-error');
  if (connectionErrors.length) {
    const threw = result.listenerExceptions.filter((e) => e.eventKind === 'connection-error');
    result.notes.push(
      `${connectionErrors.length} connection-level error event(s) (no data: stream end before ` +
        `a terminal event was handled, a network error, or the server's 204); the seed ` +
        `code's JSON.parse(e.data) threw on ${threw.length} of them (${threw[0]?.message ?? '-'}). ` +
        `A browser reports that as an uncaught SyntaxError and goes on.`,
    );
  }
  result.elapsedMs = elapsed();
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

async function main() {
  try {
    if (mode === 'example') {
      exampleClientCode(await prepareForExample());
    } else if (mode === 'stream') {
      exampleClientCode(arg);
    } else if (mode === 'chat') {
      await chatWithAI(MESSAGE);
    } else {
      await chatWithAIContent(MESSAGE);
    }
    await waitForEnd();
  } catch (err) {
    result.exception = describeError(err);
    for (const es of instances) es.close();
  }
  finish();
}

main();
