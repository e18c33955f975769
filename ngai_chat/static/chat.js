// The chat page: a model picker, the conversation, a message box, Send, Stop and
// Regenerate. It talks to the API only through ngai-client.js. Answers render as
// Markdown through markdown.js, which makes DOM nodes and text only (model output is
// never parsed as HTML); everything else here is set with textContent.
import { streamChat } from "./ngai-client.js";
import { MarkdownView, safeUrl } from "./markdown.js";

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const apiBase = meta("ngai-api-base").replace(/\/+$/, "");
const demo = meta("ngai-demo") === "1";
const defaultModel = meta("ngai-default-model");
const MODEL_KEY = "ngai-chat:model";
// Per mount point: two apps on one origin keep two conversations.
const CONVERSATION_KEY = `ngai-chat:conversation:${apiBase || "/"}`;

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

/**
 * The conversation: completed (or stopped) turns only, kept in localStorage.
 * User turns are {role, content}; assistant turns add what the page shows of them
 * (reasoning, citations, usage, model) and the reasoningDetails sent back next turn.
 */
let turns = [];
/** @type {AbortController | null} the answer being streamed, if any */
let current = null;
/** Bumped by New chat: an answer still finishing then belongs to no conversation. */
let epoch = 0;

// -- storage ---------------------------------------------------------------------------

function loadTurns() {
  try {
    const saved = JSON.parse(localStorage.getItem(CONVERSATION_KEY) ?? "null");
    if (saved?.v !== 1 || !Array.isArray(saved.turns)) return [];
    return saved.turns.filter(
      (turn) => (turn?.role === "user" || turn?.role === "assistant") && typeof turn.content === "string",
    );
  } catch {
    return []; // storage disabled, or not ours
  }
}

function saveTurns() {
  try {
    if (turns.length) localStorage.setItem(CONVERSATION_KEY, JSON.stringify({ v: 1, turns }));
    else localStorage.removeItem(CONVERSATION_KEY);
  } catch {
    // storage disabled or full: the conversation lasts as long as the page
  }
}

/** The messages /prepare gets for `list`: reasoning_details go back unchanged. */
function messagesOf(list) {
  return list.map((turn) => {
    const message = { role: turn.role, content: turn.content };
    if (turn.role === "assistant" && turn.reasoningDetails?.length) {
      message.reasoning_details = turn.reasoningDetails;
    }
    return message;
  });
}

// -- page helpers ----------------------------------------------------------------------

function setStatus(text, kind = "") {
  el.status.textContent = text;
  el.status.dataset.kind = kind;
}

function setBusy(busy) {
  el.send.disabled = busy;
  el.stop.disabled = !busy;
  el.log.setAttribute("aria-busy", String(busy));
  for (const button of el.log.querySelectorAll(".regenerate")) button.disabled = busy;
}

function nearBottom() {
  return el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 48;
}

function scrollToEnd(wasNear) {
  if (wasNear) el.log.scrollTop = el.log.scrollHeight;
}

function node(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

/** A price in credits (US dollars), with the digits a small amount needs. */
function formatCost(cost) {
  if (cost === 0) return "$0";
  // Three significant digits for fractions of a cent, cents otherwise.
  const digits = Math.min(8, Math.max(2, 2 - Math.floor(Math.log10(Math.abs(cost)))));
  return `$${cost.toFixed(digits).replace(/(\.\d\d\d*?)0+$/, "$1")}`;
}

function describeUsage(usage) {
  if (!usage || typeof usage !== "object") return "";
  const parts = [];
  const total = usage.total_tokens ?? (usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0);
  if (total) {
    let tokens = `${total} tokens`;
    if (usage.prompt_tokens !== undefined && usage.completion_tokens !== undefined) {
      tokens += ` (${usage.prompt_tokens} in, ${usage.completion_tokens} out`;
      const reasoning = usage.completion_tokens_details?.reasoning_tokens;
      if (reasoning) tokens += `, ${reasoning} reasoning`;
      tokens += ")";
    }
    parts.push(tokens);
  }
  if (typeof usage.cost === "number") parts.push(formatCost(usage.cost));
  return parts.join(" · ");
}

function describe(error) {
  const parts = [error.message];
  if (error.retryable) {
    parts.push(error.retryAfter ? `You can try again in ${error.retryAfter} s.` : "You can try again.");
  }
  return parts.join(" ");
}

// -- messages --------------------------------------------------------------------------

/** A user message bubble: its text exactly as typed. */
function addUser(content) {
  el.empty.hidden = true;
  const item = node("article", "msg user");
  item.dataset.testid = "message-user";
  const body = node("div", "text", content);
  body.dataset.testid = "message-text";
  item.append(node("h2", "who", "You"), body);
  el.log.append(item);
  scrollToEnd(true); // what one just sent is always worth seeing
  return { item };
}

/** One assistant answer on the page, rendered as it streams in. */
class Answer {
  constructor() {
    el.empty.hidden = true;
    this.item = node("article", "msg assistant");
    this.item.dataset.testid = "message-assistant";
    this.who = node("h2", "who", "Assistant");
    this.body = node("div", "text md");
    this.body.dataset.testid = "message-text";
    this.item.append(this.who, this.body);
    this.view = new MarkdownView(this.body);
    this.text = "";
    this.reasoning = "";
    this.thinking = null;
    this.frame = 0;
    el.log.append(this.item);
  }

  setState(state) {
    this.item.dataset.state = state;
    this.item.setAttribute("aria-busy", String(state === "streaming"));
  }

  setModel(model) {
    this.who.textContent = model ? `Assistant · ${model}` : "Assistant";
  }

  /** The collapsible reasoning block above the answer, made when reasoning first comes. */
  ensureThinking(open) {
    if (this.thinking) return this.thinking;
    const details = node("details", "thinking");
    details.dataset.testid = "thinking";
    details.open = open;
    const summary = node("summary", "", "Thinking…");
    const body = node("div", "reasoning md");
    details.append(summary, body);
    this.item.insertBefore(details, this.body);
    this.thinking = { details, summary, view: new MarkdownView(body), started: performance.now() };
    return this.thinking;
  }

  addReasoning(piece) {
    this.reasoning += piece;
    this.ensureThinking(true);
    this.item.dataset.phase = "thinking";
    this.schedule();
  }

  addText(piece) {
    this.text += piece;
    this.item.dataset.phase = "answering";
    this.schedule();
  }

  /** The answer has started: fold the reasoning away, saying how long it took. */
  endThinking() {
    const thinking = this.thinking;
    if (!thinking || thinking.ended) return;
    thinking.ended = true;
    thinking.details.open = false;
    const seconds = Math.round((performance.now() - thinking.started) / 1000);
    thinking.summary.textContent = seconds >= 1 ? `Thinking · ${seconds} s` : "Thinking";
  }

  /** Render at most once a frame, however fast the pieces come. */
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    const wasNear = nearBottom();
    if (this.thinking) this.thinking.view.update(this.reasoning);
    // The answer has begun: fold the reasoning in the same frame that shows the answer.
    if (this.text) this.endThinking();
    this.view.update(this.text);
    scrollToEnd(wasNear);
  }

  /** Show what `done` brought: sources, tokens and cost. */
  finish({ citations = [], usage = null } = {}) {
    this.render();
    this.endThinking();
    delete this.item.dataset.phase;
    const wasNear = nearBottom();
    const links = (Array.isArray(citations) ? citations : []).filter((c) => typeof c?.url === "string");
    if (links.length) {
      const sources = node("nav", "sources");
      sources.setAttribute("aria-label", "Sources");
      sources.dataset.testid = "citations";
      sources.append(node("h3", "", "Sources"));
      const list = node("ol");
      for (const citation of links) {
        const li = node("li");
        const href = safeUrl(citation.url);
        const label = (typeof citation.title === "string" && citation.title.trim()) || citation.url;
        if (href) {
          const a = node("a", "", label);
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          if (typeof citation.content === "string" && citation.content) {
            // the cited passage as a tooltip, cut to what a tooltip can show
            a.title = citation.content.length > 300 ? `${citation.content.slice(0, 300)}…` : citation.content;
          }
          li.append(a);
          const host = new URL(href).host;
          if (host && host !== label) li.append(" ", node("span", "host", host));
        } else {
          li.textContent = label;
        }
        list.append(li);
      }
      sources.append(list);
      this.item.append(sources);
    }
    const spent = describeUsage(usage);
    if (spent) {
      const line = node("p", "usage", spent);
      line.dataset.testid = "usage";
      this.item.append(line);
    }
    scrollToEnd(wasNear);
  }

  addNote(text, kind = "") {
    return addNote(this, text, kind);
  }

  remove() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.item.remove();
  }
}

function addNote(message, text, kind = "") {
  const wasNear = nearBottom();
  const note = node("p", `note ${kind}`.trim(), text);
  message.item.append(note);
  scrollToEnd(wasNear);
  return note;
}

/** Offer Regenerate on the last answer only. */
function placeRegenerate(answer) {
  for (const old of el.log.querySelectorAll(".msg-actions")) old.remove();
  if (!answer) return;
  const actions = node("div", "msg-actions");
  const button = node("button", "regenerate secondary", "Regenerate");
  button.type = "button";
  button.dataset.testid = "regenerate";
  button.setAttribute("aria-label", "Regenerate the last answer");
  button.addEventListener("click", regenerate);
  actions.append(button);
  answer.item.append(actions);
}

/** Show a stored assistant turn (after a reload). */
function showStored(turn) {
  const answer = new Answer();
  answer.setModel(turn.model);
  if (turn.reasoning) {
    answer.reasoning = turn.reasoning;
    answer.ensureThinking(false);
    answer.thinking.ended = true;
    answer.thinking.summary.textContent = "Thinking";
  }
  answer.text = turn.content;
  answer.finish(turn);
  answer.setState(turn.finishReason === "cancelled" ? "cancelled" : "done");
  if (turn.finishReason === "cancelled") answer.addNote("Stopped.");
  return answer;
}

// -- chatting --------------------------------------------------------------------------

/**
 * Stream an answer to `context` (the turns so far, ending with the user's message).
 *
 * @returns {Promise<boolean>} whether it ended with an answer (done or stopped)
 */
async function answer(context, { onFailed } = {}) {
  const model = el.model.value || defaultModel;
  const reply = new Answer();
  reply.setState("streaming");
  scrollToEnd(true);
  const controller = new AbortController();
  const mine = epoch;
  current = controller;
  placeRegenerate(null);
  setBusy(true);
  setStatus("Streaming…", "busy");
  try {
    const result = await streamChat({
      baseUrl: apiBase,
      model,
      messages: messagesOf(context),
      signal: controller.signal,
      onReasoning(piece) {
        reply.addReasoning(piece);
        if (el.status.textContent === "Streaming…") setStatus("Thinking…", "busy");
      },
      onToken(piece) {
        reply.addText(piece);
        if (el.status.textContent === "Thinking…") setStatus("Streaming…", "busy");
      },
      onReconnecting() {
        setStatus("Reconnecting… the answer will continue when the connection is back.", "warn");
      },
      onReconnected() {
        setStatus("Streaming…", "busy");
      },
    });
    reply.setModel(result.model);
    reply.finish(result);
    if (result.finishReason === "cancelled") {
      reply.setState("cancelled");
      reply.addNote("Stopped.");
      setStatus("Stopped.");
    } else {
      reply.setState("done");
      if (result.finishReason === "length") {
        reply.addNote("The answer was cut off: it reached the length limit.", "warn");
      }
      const spent = describeUsage(result.usage);
      setStatus(spent ? `Done · ${spent}` : "Done.");
    }
    if (mine !== epoch) return false; // New chat was pressed meanwhile
    // Keep what was said, a stopped answer's part too, so the next turn has the context.
    turns = [...context];
    if (result.text) {
      turns.push({
        role: "assistant",
        content: result.text,
        reasoning: result.reasoning,
        reasoningDetails: result.finishReason === "cancelled" ? [] : result.reasoningDetails,
        citations: result.citations,
        usage: result.usage,
        model: result.model,
        finishReason: result.finishReason,
      });
      placeRegenerate(reply);
    }
    saveTurns();
    return true;
  } catch (error) {
    reply.render();
    reply.endThinking();
    reply.setState("error");
    reply.addNote(describe(error), "error").dataset.code = error.code ?? "error";
    setStatus(`Error: ${error.message}`, "error");
    onFailed?.();
    return false;
  } finally {
    if (current === controller) current = null;
    setBusy(false);
    const focused = document.activeElement;
    if (!focused || focused === document.body || focused === el.stop || focused === el.send) el.prompt.focus();
  }
}

async function send() {
  const content = el.prompt.value;
  if (current || !content.trim()) return;
  el.prompt.value = "";
  const mine = addUser(content);
  const context = [...turns, { role: "user", content }];
  await answer(context, {
    onFailed() {
      mine.item.classList.add("not-sent");
      addNote(mine, "Not kept in the conversation.");
      // Give the message back, so that Enter tries again.
      if (!el.prompt.value) el.prompt.value = content;
    },
  });
}

/** Ask again for the last answer: one new /prepare and stream, replacing it. */
async function regenerate() {
  if (current) return;
  const last = turns[turns.length - 1];
  if (last?.role !== "assistant") return;
  const answers = el.log.querySelectorAll(".msg.assistant");
  answers[answers.length - 1]?.remove();
  const context = turns.slice(0, -1);
  await answer(context, {
    onFailed() {
      // The old answer is gone from the page, but still the one kept: show it again.
      turns = [...context, last];
      placeRegenerate(showStored(last));
    },
  });
}

function stop() {
  if (!current) return;
  setStatus("Stopping…", "busy");
  current.abort();
}

function newChat() {
  stop();
  epoch += 1;
  turns = [];
  saveTurns();
  for (const item of el.log.querySelectorAll(".msg")) item.remove();
  el.empty.hidden = false;
  setStatus("New conversation.");
  el.prompt.focus();
}

function restore() {
  turns = loadTurns();
  let last = null;
  for (const turn of turns) {
    if (turn.role === "user") {
      addUser(turn.content);
      last = null;
    } else last = showStored(turn);
  }
  if (last) placeRegenerate(last);
  if (turns.length) {
    el.log.scrollTop = el.log.scrollHeight;
    setStatus("Conversation restored. New chat clears it.");
  }
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

restore();
loadModels().finally(() => {
  document.documentElement.dataset.ready = "true";
});
el.prompt.focus();
