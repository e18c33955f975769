/**
 * ngai-client.js: a small, dependency-free browser client for the ngai_chat API.
 *
 *     import { streamChat } from "./ngai-client.js";
 *     const stop = new AbortController();
 *     const { text, finishReason, usage, citations, reasoningDetails } = await streamChat({
 *       baseUrl: "http://localhost:3000",          // "" = same origin, or a prefix: "/api/chat"
 *       model: "mistralai/mistral-7b-instruct:free",
 *       messages: [{ role: "user", content: "Hello!" }],
 *       onToken: (piece) => output.append(piece),
 *       onReasoning: (piece) => thinking.append(piece), // the model's reasoning, live
 *       signal: stop.signal,                       // stop.abort() cancels the generation
 *     });
 *     // next turn: send the answer back with its reasoning_details, unchanged
 *     messages.push({ role: "assistant", content: text, reasoning_details: reasoningDetails });
 *
 * Beyond text, the result (and the callbacks, as they stream) carries what today's models
 * send: `images`, the generated images as sent (`{type: "image_url", image_url: {url}}`,
 * the url a `data:image/png;base64,…` URL of several MB or an `https:` URL; onImage
 * is called once per image), and `toolCalls`, the answer's tool calls assembled from the
 * `delta.tool_calls` fragments by their `index` (`[{id, type: "function", function: {name,
 * arguments}}]`, arguments a JSON string; onToolCall is called with the call so far each
 * time a fragment of it arrives). `toolCalls` comes from the server's `done` when it has
 * them, from the fragments otherwise. Attachments go in as OpenAI content parts:
 *
 *     messages: [{ role: "user", content: [
 *       { type: "text", text: "What is in this picture?" },
 *       { type: "image_url", image_url: { url: "data:image/jpeg;base64,…" } },
 *       { type: "file", file: { filename: "a.pdf", file_data: "data:application/pdf;base64,…" } },
 *     ] }]
 *
 * The hard parts of EventSource it gets right:
 *
 * - An `error` event means two different things. The server's `error` event is a
 *   MessageEvent whose `data` is JSON ({code, message, status, retryable}); it ends the
 *   answer. The browser's own connection error is a plain Event with no data: with
 *   readyState CONNECTING the browser is reconnecting by itself (onReconnecting), with
 *   readyState CLOSED it gave up. `JSON.parse(e.data)` on the latter throws.
 * - The browser reconnects by itself and sends `Last-Event-ID`; the server replays what
 *   came after it. Chunks whose id is not above the last one seen are dropped as well,
 *   so no text is ever repeated.
 * - The EventSource is closed on `done` and on `error`: left open, the browser would
 *   reconnect forever.
 * - Aborting sends `DELETE /stream/<id>`, which closes the upstream request (no more
 *   tokens billed), instead of only closing the local EventSource.
 *
 * @module ngai-client
 */

/**
 * @typedef {{role: "system" | "user" | "assistant" | "tool", content: string | object[], name?: string,
 *     reasoning_details?: object[]}} ChatMessage
 */

/**
 * @typedef {object} Citation a web source the answer cites (OpenRouter's `url_citation`)
 * @property {string} url
 * @property {string} [title]
 * @property {string} [content] the cited passage, when the upstream sends it
 * @property {number} [start_index] where the citing text starts in the answer
 * @property {number} [end_index] where it ends
 */

/**
 * @typedef {object} StreamResult
 * @property {string} text the whole answer: the concatenated `content` of every chunk
 * @property {string} reasoning the model's reasoning: the concatenated `reasoning` of every chunk
 * @property {string | null} finishReason `stop`, `length`, `tool_calls`, … or `cancelled` after an abort
 * @property {string | null} model the model that answered
 * @property {object | null} usage token counts (`prompt_tokens`, `completion_tokens`,
 *     `total_tokens`, details), with `cost` in credits when the upstream reports it; null
 *     when none came (and after an abort)
 * @property {string | null} generationId the upstream's generation id (`gen-…`)
 * @property {Citation[]} citations the answer's sources, de-duplicated by url, in order of
 *     first appearance; `[]` when none
 * @property {object[]} reasoningDetails the answer's `reasoning_details`, merged; send them
 *     back unchanged on the assistant message of the next turn; `[]` when none
 * @property {GeneratedImage[]} images the images the model generated, in order, as sent
 *     (`choices[0].delta.images`); `[]` when none
 * @property {ToolCall[]} toolCalls the answer's tool calls, assembled by `index`; `[]` when
 *     none (the finish reason is then usually `tool_calls`)
 */

/**
 * @typedef {object} GeneratedImage an image the model made (OpenRouter's `delta.images` item)
 * @property {"image_url"} type
 * @property {{url: string}} image_url `data:image/png;base64,…` (or jpeg, webp) or `https://…`
 */

/**
 * @typedef {object} ToolCall a function the model asks to call
 * @property {string} id the call's id, to answer with a `tool` message's `tool_call_id`
 * @property {"function"} type
 * @property {{name: string, arguments: string}} function `arguments` is JSON text
 */

/**
 * @typedef {object} StreamChatOptions
 * @property {string} [baseUrl] where the API is mounted: `""` (same origin, the default),
 *     a path prefix (`"/api/chat"`) or an absolute URL (`"https://chat.example.com"`)
 * @property {string} [model] the model id; the server's default when omitted
 * @property {ChatMessage[]} messages the whole conversation so far, oldest first
 * @property {string} [token] sent as `Authorization: Bearer <token>` to `/prepare` and `DELETE`
 *     (an EventSource cannot send headers; the stream URL itself needs no token)
 * @property {(piece: string, chunk: object) => void} [onToken] each new piece of text, with
 *     the whole chunk event data (OpenAI `chat.completion.chunk` plus `content` and `reasoning`)
 * @property {(piece: string, chunk: object) => void} [onReasoning] each new piece of the
 *     model's reasoning (`delta.reasoning`), with the whole chunk event data; reasoning
 *     models send it before the answer
 * @property {(image: GeneratedImage, chunk: object) => void} [onImage] each generated image,
 *     whole, as it arrives (one chunk event of several MB for a large PNG)
 * @property {(call: ToolCall, index: number, chunk: object) => void} [onToolCall] a tool
 *     call as assembled so far (its arguments grow), each time a fragment of it arrives
 * @property {(result: StreamResult) => void} [onDone] the answer finished or was cancelled
 * @property {(error: ChatError) => void} [onError] the answer failed; when given, the returned
 *     promise's rejection is not also reported as unhandled
 * @property {() => void} [onReconnecting] the connection dropped; the browser is reconnecting
 * @property {() => void} [onReconnected] the connection is back; the answer continues
 * @property {AbortSignal} [signal] abort to stop the generation (`DELETE /stream/<id>`)
 * @property {typeof EventSource} [EventSource] an EventSource implementation (outside browsers)
 * Any other option (`temperature`, `max_tokens`, `top_p`, …) goes into the `/prepare` body.
 */

/** Codes worth retrying (SPEC §4); HTTP error bodies carry `retryable` too. */
const RETRYABLE = new Set([
  "rate_limited",
  "upstream_rate_limited",
  "capacity_exceeded",
  "upstream_unavailable",
  "upstream_timeout",
  "upstream_error",
  "upstream_interrupted",
  "network_error",
  "connection_closed",
]);

/** EventSource.readyState values (spelled out: polyfills may lack the constants). */
const CONNECTING = 0;

/** How often a stream refused with `capacity_exceeded` is tried again. */
const CAPACITY_RETRIES = 3;

/** An error from the server (error event or HTTP error body) or from the network. */
export class ChatError extends Error {
  /**
   * @param {string} message for people: what went wrong and what to do
   * @param {{code?: string, status?: number, retryable?: boolean, retryAfter?: number,
   *     field?: string, upstream?: object, cause?: unknown}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = "ChatError";
    /** @type {string} machine-readable code: `upstream_rate_limited`, `network_error`, … */
    this.code = info.code ?? "error";
    /** @type {number} HTTP status the error maps to (0 when there was no response) */
    this.status = info.status ?? 0;
    /** @type {boolean} whether the same request may succeed later */
    this.retryable = info.retryable ?? RETRYABLE.has(this.code);
    /** @type {number | undefined} seconds to wait before retrying */
    this.retryAfter = info.retryAfter;
    /** @type {string | undefined} the invalid field, for validation errors */
    this.field = info.field;
    /** @type {object | undefined} the upstream's own error object */
    this.upstream = info.upstream;
  }
}

/** @param {string} baseUrl @param {string} path */
function join(baseUrl, path) {
  return String(baseUrl || "").replace(/\/+$/, "") + path;
}

/** Resolve `url` (the server's `streamUrl`, a path) against where the API lives. */
function resolve(url, baseUrl) {
  const here = globalThis.location?.href;
  const base = here ? new URL(join(baseUrl, "/"), here) : new URL(join(baseUrl, "/"));
  return new URL(url, base).href;
}

/** @param {string | undefined} token */
function auth(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Turn a non-2xx response into a ChatError, whatever its body. */
async function errorFrom(response) {
  let info = null;
  try {
    info = (await response.json())?.error;
  } catch {
    // not JSON: a proxy's error page, say
  }
  const header = Number(response.headers.get("Retry-After"));
  if (info && typeof info.message === "string") {
    return new ChatError(info.message, {
      ...info,
      status: info.status ?? response.status,
      retryAfter: info.retryAfter ?? (header || undefined),
    });
  }
  return new ChatError(`The chat server answered HTTP ${response.status} ${response.statusText}`.trim(), {
    code: "http_error",
    status: response.status,
    retryable: response.status === 429 || response.status >= 500,
    retryAfter: header || undefined,
  });
}

/**
 * Create a session: `POST <baseUrl>/prepare`.
 *
 * @param {{baseUrl?: string, token?: string, model?: string, messages: ChatMessage[]}
 *     & Record<string, unknown>} options
 * @returns {Promise<{sessionId: string, streamUrl: string, expiresAt?: string}>} `streamUrl`
 *     is absolute
 * @throws {ChatError} on an HTTP error (its code and message come from the server) or a
 *     network failure (`network_error`)
 */
export async function prepare({ baseUrl = "", token, ...body }) {
  const url = join(baseUrl, "/prepare");
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...auth(token) },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new ChatError(`Could not reach the chat server (${err.message}). Check your connection and try again.`, {
      code: "network_error",
      cause: err,
    });
  }
  if (!response.ok) throw await errorFrom(response);
  const session = await response.json();
  // The seed Node server answers only {sessionId}; ours also gives the prefixed streamUrl.
  const path = session.streamUrl ?? join(baseUrl, `/stream/${encodeURIComponent(session.sessionId)}`);
  return { ...session, streamUrl: resolve(path, baseUrl) };
}

/**
 * Stop a generation: `DELETE <streamUrl>`. Never throws; false when it did not get through.
 *
 * @param {string} streamUrl @param {string} [token]
 */
export async function cancel(streamUrl, token) {
  try {
    const response = await fetch(streamUrl, {
      method: "DELETE",
      headers: auth(token),
      keepalive: true,
      signal: AbortSignal.timeout?.(5000),
    });
    return response.ok || response.status === 404;
  } catch {
    return false;
  }
}

/** @returns {any} the event's JSON data, or null when it is not JSON */
function parse(event) {
  try {
    return JSON.parse(event.data);
  } catch {
    return null;
  }
}

/**
 * Ask for an answer and stream it: `POST /prepare`, then an EventSource on the stream URL.
 *
 * @param {StreamChatOptions} options
 * @returns {Promise<StreamResult>} resolves when the answer is complete or cancelled; rejects
 *     with a {@link ChatError} on a server `error` event, an HTTP error or a lost connection
 */
export function streamChat(options) {
  const promise = run(options);
  // Errors already go to onError: don't also report them as unhandled rejections.
  if (options.onError) promise.catch(() => {});
  return promise;
}

async function run({
  baseUrl = "",
  token,
  onToken,
  onReasoning,
  onImage,
  onToolCall,
  onDone,
  onError,
  onReconnecting,
  onReconnected,
  signal,
  EventSource: EventSourceImpl = globalThis.EventSource,
  ...body
}) {
  const finish = (result) => {
    onDone?.(result);
    return result;
  };
  const cancelled = { ...emptyResult(body.model ?? null), finishReason: "cancelled" };
  try {
    if (signal?.aborted) return finish(cancelled);
    // The signal is not passed to fetch: an abort during /prepare would leave a session
    // behind. It is cancelled below instead, before any upstream request is made.
    const { streamUrl } = await prepare({ baseUrl, token, ...body });
    if (signal?.aborted) {
      await cancel(streamUrl, token);
      return finish(cancelled);
    }
    const result = await follow(streamUrl, {
      token,
      signal,
      onToken,
      onReasoning,
      onImage,
      onToolCall,
      onReconnecting,
      onReconnected,
      EventSourceImpl,
      model: body.model ?? null,
    });
    return finish(result);
  } catch (err) {
    const error = err instanceof ChatError ? err : new ChatError(String(err?.message ?? err), { cause: err });
    onError?.(error);
    throw error;
  }
}

/** @param {string | null} model */
function emptyResult(model) {
  return {
    text: "",
    reasoning: "",
    finishReason: null,
    model,
    usage: null,
    generationId: null,
    citations: [],
    reasoningDetails: [],
    images: [],
    toolCalls: [],
  };
}

/** The `delta.images` of a chunk that are images with a url. */
function imagesOf(delta) {
  const images = Array.isArray(delta?.images) ? delta.images : [];
  return images.filter((image) => typeof image?.image_url?.url === "string");
}

/**
 * Tool calls from their `delta.tool_calls` fragments, by `index`: `id`, `type` and
 * `function.name` from the fragments that carry them, `function.arguments` concatenated.
 */
class ToolCalls {
  constructor() {
    /** @type {Map<number, ToolCall>} */
    this.byIndex = new Map();
  }

  /** @returns {[ToolCall, number][]} the calls this chunk added to, with their index */
  add(delta) {
    const touched = [];
    const fragments = Array.isArray(delta?.tool_calls) ? delta.tool_calls : [];
    for (const [position, fragment] of fragments.entries()) {
      if (!fragment || typeof fragment !== "object") continue;
      const index = typeof fragment.index === "number" ? fragment.index : position;
      let call = this.byIndex.get(index);
      if (!call) {
        call = { id: "", type: "function", function: { name: "", arguments: "" } };
        this.byIndex.set(index, call);
      }
      if (typeof fragment.id === "string" && fragment.id) call.id = fragment.id;
      if (typeof fragment.type === "string" && fragment.type) call.type = fragment.type;
      const fn = fragment.function;
      if (typeof fn?.name === "string" && fn.name) call.function.name = fn.name;
      if (typeof fn?.arguments === "string") call.function.arguments += fn.arguments;
      touched.push([call, index]);
    }
    return touched;
  }

  /** @returns {ToolCall[]} copies, in index order */
  list() {
    return [...this.byIndex.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([, call]) => ({ ...call, function: { ...call.function } }));
  }
}

/**
 * What the chunks say about citations and reasoning details, for servers whose `done`
 * does not (the seed server): the same rules as ngai_chat's `done`.
 */
class ChunkNotes {
  constructor() {
    /** @type {Map<string, object>} */
    this.citations = new Map();
    /** @type {object[]} */
    this.details = [];
    /** @type {Map<number, object>} */
    this.byIndex = new Map();
  }

  /** @param {object} chunk */
  add(chunk) {
    const choice = chunk.choices?.[0];
    for (const holder of [choice?.delta, choice?.message]) {
      for (const note of Array.isArray(holder?.annotations) ? holder.annotations : []) {
        const cite = note?.type === "url_citation" ? note.url_citation : null;
        if (cite && typeof cite.url === "string" && !this.citations.has(cite.url)) {
          this.citations.set(cite.url, cite);
        }
      }
    }
    const details = choice?.delta?.reasoning_details;
    for (const detail of Array.isArray(details) ? details : []) {
      if (!detail || typeof detail !== "object") continue;
      const known = typeof detail.index === "number" ? this.byIndex.get(detail.index) : undefined;
      if (!known) {
        const copy = { ...detail };
        this.details.push(copy);
        if (typeof detail.index === "number") this.byIndex.set(detail.index, copy);
        continue;
      }
      for (const [key, value] of Object.entries(detail)) {
        if (["text", "summary", "data"].includes(key) && typeof value === "string") {
          known[key] = (typeof known[key] === "string" ? known[key] : "") + value;
        } else if (value !== null && value !== undefined) {
          known[key] = value;
        }
      }
    }
  }
}

/** Read one stream to its terminal event. */
function follow(
  streamUrl,
  {
    token,
    signal,
    onToken,
    onReasoning,
    onImage,
    onToolCall,
    onReconnecting,
    onReconnected,
    EventSourceImpl,
    model,
  },
) {
  return new Promise((resolvePromise, rejectPromise) => {
    let text = "";
    let reasoning = "";
    let generationId = null;
    const notes = new ChunkNotes();
    const images = [];
    const toolCalls = new ToolCalls();
    let lastId = 0;
    let reconnecting = false;
    let settled = false;
    let capacityRetries = 0;
    let retryTimer;
    /** @type {EventSource} */
    let source;

    const settle = (fn, value) => {
      if (settled) return;
      settled = true;
      source?.close();
      clearTimeout(retryTimer);
      signal?.removeEventListener("abort", onAbort);
      fn(value);
    };
    const setReconnecting = () => {
      if (!reconnecting) {
        reconnecting = true;
        onReconnecting?.();
      }
    };

    function onAbort() {
      if (settled) return;
      source?.close(); // no more tokens from here on
      clearTimeout(retryTimer);
      const result = {
        ...emptyResult(model),
        text,
        reasoning,
        finishReason: "cancelled",
        generationId,
        citations: [...notes.citations.values()],
        reasoningDetails: notes.details,
        images: [...images],
        toolCalls: toolCalls.list(),
      };
      cancel(streamUrl, token).then(() => settle(resolvePromise, result));
    }

    function connect(url) {
      source = new EventSourceImpl(url);
      source.addEventListener("open", () => {
        if (reconnecting) {
          reconnecting = false;
          onReconnected?.();
        }
      });
      source.addEventListener("chunk", (event) => {
        // Ids rise by 1 per event; one at or below the last seen is a replay: skip it.
        if (event.lastEventId !== "") {
          const id = Number(event.lastEventId);
          if (id <= lastId) return;
          lastId = id;
        }
        const chunk = parse(event);
        if (!chunk || settled) return;
        if (chunk.model) model = chunk.model;
        if (typeof chunk.id === "string" && chunk.id) generationId = chunk.id;
        notes.add(chunk);
        const delta = chunk.choices?.[0]?.delta;
        const thought = typeof chunk.reasoning === "string" ? chunk.reasoning : (delta?.reasoning ?? "");
        if (thought && typeof thought === "string") {
          reasoning += thought;
          onReasoning?.(thought, chunk);
        }
        const piece = typeof chunk.content === "string" ? chunk.content : (delta?.content ?? "");
        if (piece && typeof piece === "string") {
          text += piece;
          onToken?.(piece, chunk);
        }
        for (const image of imagesOf(delta)) {
          images.push(image);
          onImage?.(image, chunk);
        }
        for (const [call, index] of toolCalls.add(delta)) {
          onToolCall?.({ ...call, function: { ...call.function } }, index, chunk);
        }
      });
      source.addEventListener("done", (event) => {
        const info = parse(event) ?? {};
        settle(resolvePromise, {
          text,
          reasoning,
          finishReason: info.finishReason ?? null,
          model: info.model ?? model,
          usage: info.usage ?? null,
          generationId: info.generationId ?? generationId,
          citations: Array.isArray(info.citations) ? info.citations : [...notes.citations.values()],
          reasoningDetails: Array.isArray(info.reasoningDetails) ? info.reasoningDetails : notes.details,
          images: [...images],
          toolCalls: Array.isArray(info.toolCalls) ? info.toolCalls : toolCalls.list(),
        });
      });
      source.addEventListener("error", (event) => {
        if (settled) return;
        if (typeof event.data === "string") {
          // The server's error event: JSON data, and the end of this answer.
          const info = parse(event) ?? { message: "The chat server sent an unreadable error." };
          if (info.code === "capacity_exceeded" && capacityRetries < CAPACITY_RETRIES) {
            // The stream was refused before it started; the session can be read later.
            capacityRetries += 1;
            source.close();
            setReconnecting();
            const resume = new URL(streamUrl);
            resume.searchParams.set("lastEventId", String(lastId));
            retryTimer = setTimeout(() => connect(resume.href), 1000 * (info.retryAfter || 3));
            return;
          }
          settle(rejectPromise, new ChatError(info.message ?? "The chat server reported an error.", info));
        } else if (source.readyState === CONNECTING) {
          // The browser's own connection error: it reconnects by itself with Last-Event-ID.
          setReconnecting();
        } else {
          // CLOSED without a done or error event: an HTTP error, a wrong content type, or a
          // 204 for a session that is gone.
          settle(
            rejectPromise,
            new ChatError("The connection to the chat server closed before the answer was complete. Try again.", {
              code: "connection_closed",
            }),
          );
        }
      });
    }

    signal?.addEventListener("abort", onAbort);
    connect(streamUrl);
  });
}
