// The chat page: a model picker, the conversation, a message box, Send and Stop.
// It talks to the API only through ngai-client.js, and renders every text with
// textContent (model output is never parsed as HTML).
import { streamChat } from "./ngai-client.js";

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const apiBase = meta("ngai-api-base").replace(/\/+$/, "");
const demo = meta("ngai-demo") === "1";
const defaultModel = meta("ngai-default-model");
const MODEL_KEY = "ngai-chat:model";

const el = {
  model: document.getElementById("model"),
  log: document.getElementById("log"),
  empty: document.getElementById("empty"),
  form: document.getElementById("composer"),
  prompt: document.getElementById("prompt"),
  send: document.getElementById("send"),
  stop: document.getElementById("stop"),
  status: document.getElementById("status"),
  newChat: document.getElementById("new-chat"),
};

/** The conversation sent with every /prepare: completed (or stopped) turns only. */
let history = [];
/** @type {AbortController | null} the answer being streamed, if any */
let current = null;

function setStatus(text, kind = "") {
  el.status.textContent = text;
  el.status.dataset.kind = kind;
}

function setBusy(busy) {
  el.send.disabled = busy;
  el.stop.disabled = !busy;
  el.log.setAttribute("aria-busy", String(busy));
}

function nearBottom() {
  return el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 48;
}

function scrollToEnd(wasNear) {
  if (wasNear) el.log.scrollTop = el.log.scrollHeight;
}

/** Add a message bubble; returns its parts. */
function addMessage(role, content) {
  const wasNear = nearBottom();
  el.empty.hidden = true;
  const item = document.createElement("article");
  item.className = `msg ${role}`;
  item.dataset.testid = `message-${role}`;
  const who = document.createElement("h2");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "text";
  body.dataset.testid = "message-text";
  const textNode = document.createTextNode(content);
  body.append(textNode);
  item.append(who, body);
  el.log.append(item);
  scrollToEnd(wasNear || role === "user");
  return { item, who, body, textNode };
}

function addNote(message, text, kind = "") {
  const wasNear = nearBottom();
  const note = document.createElement("p");
  note.className = `note ${kind}`.trim();
  note.textContent = text;
  message.item.append(note);
  scrollToEnd(wasNear);
  return note;
}

function setState(message, state) {
  message.item.dataset.state = state;
  message.item.setAttribute("aria-busy", String(state === "streaming"));
}

function describe(error) {
  const parts = [error.message];
  if (error.retryable) {
    parts.push(error.retryAfter ? `You can try again in ${error.retryAfter} s.` : "You can try again.");
  }
  return parts.join(" ");
}

async function send() {
  const content = el.prompt.value;
  if (current || !content.trim()) return;
  const model = el.model.value || defaultModel;
  el.prompt.value = "";
  const mine = addMessage("user", content);
  const reply = addMessage("assistant", "");
  setState(reply, "streaming");
  const messages = [...history, { role: "user", content }];
  const controller = new AbortController();
  current = controller;
  setBusy(true);
  setStatus("Streaming…", "busy");
  try {
    const result = await streamChat({
      baseUrl: apiBase,
      model,
      messages,
      signal: controller.signal,
      onToken(piece) {
        const wasNear = nearBottom();
        reply.textNode.appendData(piece);
        scrollToEnd(wasNear);
      },
      onReconnecting() {
        setStatus("Reconnecting… the answer will continue when the connection is back.", "warn");
      },
      onReconnected() {
        setStatus("Streaming…", "busy");
      },
    });
    if (result.model) reply.who.textContent = `Assistant · ${result.model}`;
    if (result.finishReason === "cancelled") {
      setState(reply, "cancelled");
      addNote(reply, "Stopped.");
      setStatus("Stopped.");
    } else {
      setState(reply, "done");
      if (result.finishReason === "length") {
        addNote(reply, "The answer was cut off: it reached the length limit.", "warn");
      }
      const tokens = result.usage?.total_tokens;
      setStatus(`Done${tokens ? ` · ${tokens} tokens` : ""}.`);
    }
    // Keep what was said, a stopped answer's part too, so the next turn has the context.
    history = result.text ? [...messages, { role: "assistant", content: result.text }] : messages;
  } catch (error) {
    setState(reply, "error");
    addNote(reply, describe(error), "error").dataset.code = error.code ?? "error";
    mine.item.classList.add("not-sent");
    addNote(mine, "Not kept in the conversation.");
    setStatus(`Error: ${error.message}`, "error");
    // Give the message back, so that Enter tries again.
    if (!el.prompt.value) el.prompt.value = content;
  } finally {
    current = null;
    setBusy(false);
    const focused = document.activeElement;
    if (!focused || focused === document.body || focused === el.stop || focused === el.send) el.prompt.focus();
  }
}

function stop() {
  if (!current) return;
  setStatus("Stopping…", "busy");
  current.abort();
}

function newChat() {
  stop();
  history = [];
  for (const item of el.log.querySelectorAll(".msg")) item.remove();
  el.empty.hidden = false;
  setStatus("New conversation.");
  el.prompt.focus();
}

async function loadModels() {
  let models = [];
  let problem = "";
  try {
    const response = await fetch(`${apiBase}/models?free=1`, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    if (!response.ok) problem = body?.error?.message ?? `HTTP ${response.status}`;
    else models = (Array.isArray(body?.data) ? body.data : []).filter((m) => typeof m?.id === "string");
  } catch (error) {
    problem = error.message;
  }
  if (!models.length) {
    const why = problem ? `Could not load the model list (${problem})` : "The server lists no free models";
    setStatus(`${why}. Using the default model, ${defaultModel}.`, "warn");
    return;
  }
  models.sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  // The configured default may be a paid model that ?free=1 leaves out: offer it anyway.
  if (!demo && defaultModel && !models.some((m) => m.id === defaultModel)) {
    models.unshift({ id: defaultModel, name: `${defaultModel} (default)` });
  }
  let saved = "";
  try {
    saved = localStorage.getItem(MODEL_KEY) ?? "";
  } catch {
    // storage disabled: no memory of the last choice
  }
  const chosen = [saved, el.model.value, defaultModel].find((id) => id && models.some((m) => m.id === id));
  el.model.replaceChildren(...models.map((m) => new Option(m.name || m.id, m.id)));
  el.model.value = chosen ?? models[0].id;
  el.model.dataset.loaded = "true";
}

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
el.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && current) {
    event.preventDefault();
    stop();
  }
});
el.stop.addEventListener("click", stop);
el.newChat.addEventListener("click", newChat);
el.model.addEventListener("change", () => {
  try {
    localStorage.setItem(MODEL_KEY, el.model.value);
  } catch {
    // storage disabled
  }
});

loadModels().finally(() => {
  document.documentElement.dataset.ready = "true";
});
el.prompt.focus();
