// The chat page: past conversations, a model picker, the conversation, a message box
// with attachments, Send, Stop, Regenerate, Edit and Copy. It talks to the API only
// through ngai-client.js. Answers render as Markdown through markdown.js, which makes
// DOM nodes and text only (model output is never parsed as HTML); everything else
// here is set with textContent, and images are shown only from data: URLs of png,
// jpeg, webp or gif and from https: URLs (the page's CSP allows exactly that).
import { streamChat } from "./ngai-client.js";
import { MarkdownView, copyText, safeUrl } from "./markdown.js";

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const apiBase = meta("ngai-api-base").replace(/\/+$/, "");
const demo = meta("ngai-demo") === "1";
const defaultModel = meta("ngai-default-model");
const MODEL_KEY = "ngai-chat:model";
// Per mount point: two apps on one origin keep two sets of conversations.
const NS = `ngai-chat:${apiBase || "/"}`;
const INDEX_KEY = `${NS}:chats`;
const CURRENT_KEY = `${NS}:current`;
const chatKey = (id) => `${NS}:chat:${id}`;
/** Where the page kept its one conversation before there was a list. */
const OLD_KEY = `ngai-chat:conversation:${apiBase || "/"}`;

/** Images are sent at most this many pixels on their long side. */
const MAX_SIDE = 2048;
/** An image already small enough, of a type every model takes, under this size goes as it is. */
const KEEP_AS_IS_BYTES = 1024 * 1024;
const JPEG_QUALITY = 0.88;
const MAX_PDF_BYTES = 20 * 1024 * 1024;
const SENDABLE_IMAGES = new Set(["image/png", "image/jpeg", "image/webp", "image/gif"]);
/** The generated images shown: data: URLs of these types (and https: URLs). */
const DATA_IMAGE = /^data:image\/(?:png|jpeg|webp|gif);base64,[A-Za-z0-9+/]*={0,2}$/;

const el = {
  shell: document.getElementById("shell"),
  menu: document.getElementById("menu"),
  scrim: document.getElementById("scrim"),
  chatList: document.getElementById("chat-list"),
  chatListEmpty: document.getElementById("chat-list-empty"),
  model: document.getElementById("model"),
  modelFilter: document.getElementById("model-filter"),
  log: document.getElementById("log"),
  empty: document.getElementById("empty"),
  form: document.getElementById("composer"),
  prompt: document.getElementById("prompt"),
  pending: document.getElementById("pending"),
  attach: document.getElementById("attach"),
  file: document.getElementById("file"),
  send: document.getElementById("send"),
  stop: document.getElementById("stop"),
  status: document.getElementById("status"),
  newChat: document.getElementById("new-chat"),
  dropZone: document.getElementById("drop-zone"),
  viewer: document.getElementById("viewer"),
  viewerImg: document.getElementById("viewer-img"),
  viewerDownload: document.getElementById("viewer-download"),
  viewerClose: document.getElementById("viewer-close"),
};

/**
 * A conversation: {id, title, titled (renamed by hand), updated, turns}. Turns are the
 * completed (or stopped) ones only. User turns are {role, content, attachments?}, an
 * attachment {kind: "image" | "pdf", name, type, size, width?, height?, dataUrl} (no
 * dataUrl and `dropped` when the browser's storage had no room for it). Assistant turns
 * add what the page shows of them (reasoning, citations, usage, model, images, toolCalls)
 * and the reasoningDetails sent back next turn.
 */
let conv = newConversation();
/** @type {{id: string, title: string, updated: number}[]} the list, newest first */
let chats = [];
/** @type {AbortController | null} the answer being streamed, if any */
let current = null;
/** @type {{id: number, name: string, ready: Promise<object | null>, attachment?: object}[]} */
let pending = [];
let pendingIds = 0;

// -- storage ---------------------------------------------------------------------------

function newConversation() {
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  return { id, title: "", titled: false, updated: 0, turns: [] };
}

function storageGet(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "null");
  } catch {
    return null; // storage disabled, or not ours
  }
}

function storageSet(key, value) {
  try {
    localStorage.setItem(key, typeof value === "string" ? value : JSON.stringify(value));
    return true;
  } catch {
    return false; // storage disabled or full
  }
}

function storageRemove(key) {
  try {
    localStorage.removeItem(key);
  } catch {
    // storage disabled
  }
}

function validTurns(turns) {
  return (Array.isArray(turns) ? turns : []).filter(
    (turn) => (turn?.role === "user" || turn?.role === "assistant") && typeof turn.content === "string",
  );
}

function loadChat(id) {
  const saved = storageGet(chatKey(id));
  if (saved?.v !== 2 || saved.id !== id) return null;
  return {
    id,
    title: typeof saved.title === "string" ? saved.title : "",
    titled: Boolean(saved.titled),
    updated: Number(saved.updated) || 0,
    turns: validTurns(saved.turns),
  };
}

function writeIndex() {
  storageSet(INDEX_KEY, { v: 2, chats });
}

/** The title a conversation gets from its first message. */
function titleFrom(turns) {
  const first = turns.find((turn) => turn.role === "user");
  if (!first) return "New chat";
  const line = first.content.split("\n").find((l) => l.trim())?.trim() ?? "";
  if (line) return line.length > 60 ? `${line.slice(0, 57).trimEnd()}…` : line;
  return first.attachments?.[0]?.name ?? "New chat";
}

/** The stored form of a turn: a copy, so that dropping an attachment leaves the page's. */
function storedTurn(turn) {
  const copy = { ...turn };
  if (turn.attachments) copy.attachments = turn.attachments.map((a) => ({ ...a }));
  if (turn.images) copy.images = turn.images.map((i) => ({ ...i }));
  return copy;
}

/**
 * Keep `chat` in localStorage. When it does not fit, its attachments (the largest first)
 * are left out of the stored copy until it does: the text is always kept.
 *
 * @returns {string[] | null} the names of the attachments that were left out; null when
 *     not even the text could be kept
 */
function persist(chat) {
  if (chat.deleted || !chat.turns.length) return [];
  chat.updated = Date.now();
  if (!chat.titled) chat.title = titleFrom(chat.turns);
  const data = { v: 2, id: chat.id, title: chat.title, titled: chat.titled, updated: chat.updated };
  data.turns = chat.turns.map(storedTurn);
  chats = [{ id: chat.id, title: chat.title, updated: chat.updated }, ...chats.filter((c) => c.id !== chat.id)];
  const dropped = keep(chat.id, data);
  writeIndex();
  if (chat === conv) storageSet(CURRENT_KEY, chat.id);
  return dropped;
}

/**
 * Store `data`, leaving out attachments, the largest first, until it fits.
 *
 * @returns {string[] | null} the names of what was left out; null when nothing could be kept
 */
function keep(id, data) {
  if (storageSet(chatKey(id), data)) return [];
  // Too big: drop attachments, the largest first, until it fits.
  const heavy = [];
  data.turns.forEach((turn, t) => {
    (turn.attachments ?? []).forEach((a, i) => {
      if (a.dataUrl) heavy.push({ t, list: "attachments", i, size: a.dataUrl.length, name: a.name });
    });
    (turn.images ?? []).forEach((image, i) => {
      const size = image.url?.startsWith("data:") ? image.url.length : 0;
      if (size) heavy.push({ t, list: "images", i, size, name: `generated image ${i + 1}` });
    });
  });
  heavy.sort((a, b) => b.size - a.size);
  const dropped = [];
  for (const item of heavy) {
    const held = data.turns[item.t][item.list][item.i];
    delete held.dataUrl;
    delete held.url;
    held.dropped = true;
    dropped.push(item.name);
    if (storageSet(chatKey(id), data)) return dropped;
  }
  return null; // not even the text fits (or storage is off): it lasts as long as the page
}

function removeChat(id) {
  storageRemove(chatKey(id));
  chats = chats.filter((c) => c.id !== id);
  writeIndex();
}

/** Read the list; bring over the one conversation an older page kept. */
function loadIndex() {
  const saved = storageGet(INDEX_KEY);
  chats = saved?.v === 2 && Array.isArray(saved.chats) ? saved.chats.filter((c) => typeof c?.id === "string") : [];
  const old = storageGet(OLD_KEY);
  if (old?.v === 1 && validTurns(old.turns).length) {
    const chat = newConversation();
    chat.turns = validTurns(old.turns);
    persist(chat);
    storageRemove(OLD_KEY);
    storageSet(CURRENT_KEY, chat.id);
  }
}

/** The messages /prepare gets for `list`: attachments as content parts, reasoning_details back. */
function messagesOf(list) {
  return list.flatMap((turn) => {
    if (turn.role === "user") {
      const parts = [];
      for (const a of turn.attachments ?? []) {
        if (!a.dataUrl) continue; // dropped for lack of storage: not sent again
        if (a.kind === "pdf") parts.push({ type: "file", file: { filename: a.name, file_data: a.dataUrl } });
        else parts.push({ type: "image_url", image_url: { url: a.dataUrl } });
      }
      if (!parts.length) return [{ role: "user", content: turn.content }];
      return [{ role: "user", content: [...(turn.content ? [{ type: "text", text: turn.content }] : []), ...parts] }];
    }
    // An answer of tool calls or images only has no text to send back; the tool calls
    // were never run, so they are not sent as tool_calls (that needs tool results).
    if (!turn.content) return [];
    const message = { role: "assistant", content: turn.content };
    if (turn.reasoningDetails?.length) message.reasoning_details = turn.reasoningDetails;
    return [message];
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
  for (const button of el.log.querySelectorAll(".regenerate, .edit")) button.disabled = busy;
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

function button(label, className, onClick, aria) {
  const made = node("button", className, label);
  made.type = "button";
  if (aria) made.setAttribute("aria-label", aria);
  made.addEventListener("click", onClick);
  return made;
}

/** A price in credits (US dollars), with the digits a small amount needs. */
function formatCost(cost) {
  if (cost === 0) return "$0";
  // Three significant digits for fractions of a cent, cents otherwise.
  const digits = Math.min(8, Math.max(2, 2 - Math.floor(Math.log10(Math.abs(cost)))));
  return `$${cost.toFixed(digits).replace(/(\.\d\d\d*?)0+$/, "$1")}`;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
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

/** `url` if the page may show it as an image: a data: png/jpeg/webp/gif or https:. */
function safeImageUrl(url) {
  if (typeof url !== "string") return null;
  if (url.startsWith("data:")) return DATA_IMAGE.test(url) ? url : null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// -- the full-size image viewer --------------------------------------------------------

function openViewer(url, name) {
  el.viewerImg.src = url;
  el.viewerImg.alt = name;
  el.viewerDownload.href = url;
  el.viewerDownload.download = name.replace(/[^\w.-]+/g, "_") || "image";
  if (!el.viewer.open) el.viewer.showModal();
}

el.viewerClose.addEventListener("click", () => el.viewer.close());
el.viewer.addEventListener("click", (event) => {
  if (event.target === el.viewer) el.viewer.close(); // a click beside the image
});
el.viewer.addEventListener("close", () => el.viewerImg.removeAttribute("src"));

/** A thumbnail (or a readable image) that opens full size. */
function imageButton(url, name, className) {
  const open = button("", className, () => openViewer(url, name), `Open ${name} full size`);
  const img = node("img");
  img.referrerPolicy = "no-referrer"; // an https: image learns nothing of this page
  img.src = url;
  img.alt = name;
  img.decoding = "async";
  open.append(img);
  return open;
}

// -- attachments -----------------------------------------------------------------------

function readAsDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function base64Bytes(dataUrl) {
  const data = dataUrl.slice(dataUrl.indexOf(",") + 1);
  return Math.floor((data.length * 3) / 4) - (data.endsWith("==") ? 2 : data.endsWith("=") ? 1 : 0);
}

function hasTransparency(context, width, height) {
  const pixels = context.getImageData(0, 0, width, height).data;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] < 255) return true;
  return false;
}

/**
 * An image, ready to send: at most MAX_SIDE px on its long side (drawn smaller in a
 * canvas), PNG when it has transparency, else JPEG; a small enough png/jpeg/webp/gif
 * goes as it is.
 */
async function prepareImage(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    throw new Error(`${file.name || "The image"} could not be read as an image.`);
  }
  const { width, height } = bitmap;
  const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
  const name = file.name || "pasted image";
  if (scale === 1 && SENDABLE_IMAGES.has(file.type) && file.size <= KEEP_AS_IS_BYTES) {
    bitmap.close();
    const dataUrl = await readAsDataUrl(file);
    return { kind: "image", name, type: file.type, size: file.size, width, height, dataUrl };
  }
  const w = Math.max(1, Math.round(width * scale));
  const h = Math.max(1, Math.round(height * scale));
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, w, h);
  bitmap.close();
  const type = file.type !== "image/jpeg" && hasTransparency(context, w, h) ? "image/png" : "image/jpeg";
  const dataUrl = canvas.toDataURL(type, JPEG_QUALITY);
  canvas.width = canvas.height = 0; // let the pixels go now
  return { kind: "image", name, type, size: base64Bytes(dataUrl), width: w, height: h, dataUrl };
}

async function prepareFile(file) {
  const isPdf = file.type === "application/pdf" || (!file.type && /\.pdf$/i.test(file.name));
  if (isPdf) {
    if (file.size > MAX_PDF_BYTES) {
      const limit = formatBytes(MAX_PDF_BYTES);
      throw new Error(`${file.name} is ${formatBytes(file.size)}: PDFs up to ${limit} can be attached.`);
    }
    const read = await readAsDataUrl(file);
    const dataUrl = `data:application/pdf;base64,${read.slice(read.indexOf(",") + 1)}`;
    return { kind: "pdf", name: file.name || "document.pdf", type: "application/pdf", size: file.size, dataUrl };
  }
  if (file.type.startsWith("image/")) return prepareImage(file);
  throw new Error(`${file.name || "That file"} was not attached: images and PDFs can be.`);
}

function addFiles(files) {
  for (const file of files) {
    const entry = { id: (pendingIds += 1), name: file.name || "pasted image" };
    entry.ready = prepareFile(file).then(
      (attachment) => {
        entry.attachment = attachment;
        renderPending();
        return attachment;
      },
      (error) => {
        pending = pending.filter((p) => p !== entry);
        renderPending();
        setStatus(error.message, "warn");
        return null;
      },
    );
    pending.push(entry);
  }
  renderPending();
}

function renderPending() {
  el.pending.hidden = pending.length === 0;
  el.pending.replaceChildren(
    ...pending.map((entry) => {
      const li = node("li", "pending-item");
      li.dataset.testid = "pending-item";
      const a = entry.attachment;
      li.dataset.state = a ? "ready" : "processing";
      if (a?.kind === "image") li.append(imageButton(a.dataUrl, a.name, "thumb-open"));
      else li.append(node("span", "file-chip", a ? `PDF · ${a.name} · ${formatBytes(a.size)}` : `${entry.name}…`));
      li.append(
        button("×", "remove", () => {
          pending = pending.filter((p) => p !== entry);
          renderPending();
          el.prompt.focus();
        }, `Remove ${entry.name}`),
      );
      return li;
    }),
  );
}

/** The attachments shown in a sent message. */
function attachmentsView(attachments) {
  const box = node("div", "attachments");
  box.dataset.testid = "attachments";
  for (const a of attachments) {
    if (!a.dataUrl || a.dropped) {
      const chip = node("span", "file-chip dropped", `${a.name} · not kept (the browser's storage was full)`);
      box.append(chip);
    } else if (a.kind === "image") {
      box.append(imageButton(a.dataUrl, a.name, "thumb-open"));
    } else {
      const chip = node("span", "file-chip", `PDF · ${a.name} · ${formatBytes(a.size)}`);
      chip.title = `${a.name}, ${formatBytes(a.size)}, PDF`;
      box.append(chip);
    }
  }
  return box;
}

// -- messages --------------------------------------------------------------------------

/** A user message bubble: its attachments and its text exactly as typed. */
function addUser(turn, index) {
  el.empty.hidden = true;
  const item = node("article", "msg user");
  item.dataset.testid = "message-user";
  item.dataset.index = String(index);
  item.append(node("h2", "who", "You"));
  if (turn.attachments?.length) item.append(attachmentsView(turn.attachments));
  const body = node("div", "text", turn.content);
  body.dataset.testid = "message-text";
  item.append(body);
  const actions = node("div", "msg-actions");
  const edit = button("Edit", "edit secondary", () => startEdit(item, body), "Edit this message and send it again");
  edit.dataset.testid = "edit";
  edit.disabled = Boolean(current);
  actions.append(edit);
  item.append(actions);
  el.log.append(item);
  scrollToEnd(true); // what one just sent is always worth seeing
  return { item };
}

/** Edit a sent message in place; sending it replaces the answers after it. */
function startEdit(item, body) {
  if (current || item.querySelector(".editor")) return;
  const index = Number(item.dataset.index);
  const turn = conv.turns[index];
  if (turn?.role !== "user") return;
  const editor = node("div", "editor");
  const area = node("textarea");
  area.value = turn.content;
  area.setAttribute("aria-label", "Edit your message");
  area.dataset.testid = "edit-box";
  const done = () => {
    editor.remove();
    body.hidden = false;
    item.querySelector(".msg-actions").hidden = false;
  };
  const sendEdit = button("Send", "edit-send", () => {
    done();
    resend(index, area.value);
  });
  sendEdit.dataset.testid = "edit-send";
  const cancelEdit = button("Cancel", "secondary", done);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendEdit.click();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      done();
    }
  });
  area.addEventListener("input", () => grow(area));
  const row = node("div", "editor-actions");
  row.append(sendEdit, cancelEdit);
  editor.append(area, row);
  body.hidden = true;
  item.querySelector(".msg-actions").hidden = true;
  body.after(editor);
  grow(area);
  area.focus();
}

/** Pretty-printed tool arguments: JSON indented when it parses, as sent otherwise. */
function prettyArguments(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
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
    this.gallery = node("div", "generated");
    this.gallery.dataset.testid = "generated-images";
    this.gallery.hidden = true;
    this.tools = node("div", "tool-calls");
    this.tools.hidden = true;
    this.item.append(this.who, this.body, this.gallery, this.tools);
    this.view = new MarkdownView(this.body);
    this.text = "";
    this.reasoning = "";
    this.images = [];
    this.toolCalls = [];
    this.toolsShown = "";
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

  /** A generated image, shown at a readable size; a click opens it full size. */
  addImage(url) {
    const wasNear = nearBottom();
    this.endThinking();
    this.item.dataset.phase = "answering";
    const safe = safeImageUrl(url);
    this.images.push(safe ? { url: safe } : { refused: true });
    this.gallery.hidden = false;
    const name = `Generated image ${this.images.length}`;
    if (safe) {
      const shown = imageButton(safe, name, "image-open");
      shown.querySelector("img").addEventListener("load", () => scrollToEnd(wasNear), { once: true });
      this.gallery.append(shown);
    } else {
      const why = `${name} was not shown: only data: (png, jpeg, webp, gif) and https: images are.`;
      this.gallery.append(node("p", "note warn", why));
    }
    scrollToEnd(wasNear);
  }

  /** A stored image that the browser's storage had no room for. */
  addDroppedImage() {
    this.images.push({ dropped: true });
    this.gallery.hidden = false;
    const why = `Generated image ${this.images.length} · not kept (the browser's storage was full)`;
    this.gallery.append(node("span", "file-chip dropped", why));
  }

  setToolCall(call, index) {
    this.toolCalls[index] = call;
    this.schedule();
  }

  renderTools() {
    const calls = this.toolCalls.filter(Boolean);
    const key = JSON.stringify(calls);
    if (key === this.toolsShown) return;
    const open = [...this.tools.querySelectorAll("details")].map((d) => d.open);
    this.toolsShown = key;
    this.tools.hidden = calls.length === 0;
    this.tools.replaceChildren(
      ...calls.map((call, i) => {
        const details = node("details", "tool-call");
        details.dataset.testid = "tool-call";
        details.open = open[i] ?? false;
        const summary = node("summary");
        summary.append("Tool call ", node("code", "tool-name", call.function?.name || "(unnamed)"));
        const pre = node("pre");
        pre.append(node("code", "tool-args", prettyArguments(call.function?.arguments ?? "")));
        details.append(summary, pre);
        return details;
      }),
    );
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
    if (this.text || this.toolCalls.length) this.endThinking();
    this.view.update(this.text);
    this.renderTools();
    scrollToEnd(wasNear);
  }

  /** Show what `done` brought: tool calls, sources, tokens and cost. */
  finish({ citations = [], usage = null, toolCalls = [] } = {}) {
    if (Array.isArray(toolCalls) && toolCalls.length) this.toolCalls = [...toolCalls];
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

  /** Copy under the answer (the Markdown as written, or the tool calls). */
  addActions() {
    if (this.actions) return this.actions;
    this.actions = node("div", "msg-actions");
    if (this.text || this.toolCalls.length) {
      const copy = button("Copy", "copy-answer secondary", async () => {
        const what = this.text || JSON.stringify(this.toolCalls.filter(Boolean), null, 2);
        const ok = await copyText(what);
        copy.textContent = ok ? "Copied" : "Copy failed";
        setTimeout(() => {
          copy.textContent = "Copy";
        }, 1500);
      }, "Copy this answer");
      copy.dataset.testid = "copy";
      this.actions.append(copy);
    }
    this.item.append(this.actions);
    return this.actions;
  }

  addNote(text, kind = "") {
    return addNote(this, text, kind);
  }
}

function addNote(message, text, kind = "") {
  const wasNear = nearBottom();
  const note = node("p", `note ${kind}`.trim(), text);
  const actions = message.item.querySelector(":scope > .msg-actions");
  if (actions) actions.before(note);
  else message.item.append(note);
  scrollToEnd(wasNear);
  return note;
}

/** Offer Regenerate on the last answer only, in view when the answer was being followed. */
function placeRegenerate(answer) {
  for (const old of el.log.querySelectorAll(".regenerate")) old.remove();
  if (!answer) return;
  const wasNear = nearBottom();
  const regen = button("Regenerate", "regenerate secondary", regenerate, "Regenerate the last answer");
  regen.dataset.testid = "regenerate";
  answer.addActions().append(regen);
  scrollToEnd(wasNear);
}

/** Show a stored assistant turn (after a reload, or reopening a conversation). */
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
  for (const image of turn.images ?? []) {
    if (image.url) answer.addImage(image.url);
    else answer.addDroppedImage();
  }
  answer.finish(turn);
  answer.setState(turn.finishReason === "cancelled" ? "cancelled" : "done");
  if (turn.finishReason === "cancelled") answer.addNote("Stopped.");
  answer.addActions();
  return answer;
}

/** Show `turns` of `chat` (all of them by default) in the log. */
function renderConversation(turns = conv.turns) {
  for (const item of el.log.querySelectorAll(".msg")) item.remove();
  el.empty.hidden = turns.length > 0;
  let last = null;
  turns.forEach((turn, index) => {
    if (turn.role === "user") {
      addUser(turn, index);
      last = null;
    } else last = showStored(turn);
  });
  if (last) placeRegenerate(last);
  el.log.scrollTop = el.log.scrollHeight;
}

// -- the list of conversations ---------------------------------------------------------

function renderChatList() {
  el.chatListEmpty.hidden = chats.length > 0;
  el.chatList.replaceChildren(
    ...chats.map((chat) => {
      const li = node("li", "chat-item");
      li.dataset.testid = "chat-item";
      li.dataset.id = chat.id;
      const title = chat.title || "New chat";
      const open = button(title, "chat-open", () => openChat(chat.id));
      open.dataset.testid = "chat-open";
      open.title = title;
      if (chat.id === conv.id) {
        li.classList.add("current");
        open.setAttribute("aria-current", "true");
      }
      const rename = button("✎", "chat-rename icon", () => startRename(li, chat), `Rename “${title}”`);
      rename.dataset.testid = "chat-rename";
      const remove = button("✕", "chat-delete icon", () => {
        if (remove.dataset.confirm !== "true") {
          remove.dataset.confirm = "true";
          remove.textContent = "Delete?";
          remove.setAttribute("aria-label", `Delete “${title}”: press again to confirm`);
          return;
        }
        deleteChat(chat.id);
      }, `Delete “${title}”`);
      remove.dataset.testid = "chat-delete";
      remove.addEventListener("blur", () => {
        if (remove.dataset.confirm !== "true") return;
        delete remove.dataset.confirm;
        remove.textContent = "✕";
        remove.setAttribute("aria-label", `Delete “${title}”`);
      });
      li.append(open, rename, remove);
      return li;
    }),
  );
}

function startRename(li, chat) {
  const input = node("input", "chat-title-input");
  input.type = "text";
  input.value = chat.title;
  input.maxLength = 120;
  input.setAttribute("aria-label", "Conversation title");
  input.dataset.testid = "chat-title-input";
  let finished = false;
  const finish = (save) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (save && title && title !== chat.title) {
      const target = chat.id === conv.id ? conv : loadChat(chat.id);
      if (target) {
        target.title = title;
        target.titled = true;
        const kept = { ...target, updated: chat.updated };
        chat.title = title;
        // A rename keeps the conversation's place in the list.
        keep(chat.id, { v: 2, ...kept, turns: target.turns.map(storedTurn) });
        writeIndex();
      }
    }
    renderChatList();
    el.chatList.querySelector(`[data-id="${CSS.escape(chat.id)}"] .chat-open`)?.focus();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function deleteChat(id) {
  const wasOpen = id === conv.id;
  if (wasOpen) {
    stop();
    conv.deleted = true;
  }
  const title = chats.find((c) => c.id === id)?.title ?? "";
  removeChat(id);
  if (wasOpen) startChat(newConversation());
  renderChatList();
  setStatus(`Deleted “${title}”.`);
}

function setDrawer(open) {
  el.shell.classList.toggle("drawer-open", open);
  el.menu.setAttribute("aria-expanded", String(open));
  el.scrim.hidden = !open;
}

/** Make `chat` the open conversation. */
function startChat(chat) {
  conv = chat;
  storageSet(CURRENT_KEY, chat.id);
  renderConversation();
  renderChatList();
  setDrawer(false);
}

function openChat(id) {
  if (id === conv.id) {
    setDrawer(false);
    return;
  }
  const chat = loadChat(id);
  if (!chat) {
    removeChat(id);
    renderChatList();
    setStatus("That conversation is no longer in this browser's storage.", "warn");
    return;
  }
  stop(); // an answer still streaming ends here, and is kept in its own conversation
  startChat(chat);
  setStatus(`Opened “${chat.title}”.`);
  el.prompt.focus();
}

function newChat() {
  stop();
  startChat(newConversation());
  setStatus(chats.length ? "New conversation. The others are in the list." : "New conversation.");
  el.prompt.focus();
}

// -- chatting --------------------------------------------------------------------------

function tellDropped(names) {
  if (names === null) {
    setStatus("The browser's storage is full (or off): this conversation lasts only as long as the page.", "warn");
    return;
  }
  if (!names.length) return;
  setStatus(`The browser's storage is full: this conversation's text is kept, but not ${names.join(", ")}.`, "warn");
}

/**
 * Stream an answer to `context` (the turns so far, ending with the user's message) in
 * the open conversation.
 *
 * @returns {Promise<boolean>} whether it ended with an answer (done or stopped)
 */
async function answer(context, { onFailed } = {}) {
  const chat = conv;
  const model = el.model.value || defaultModel;
  const reply = new Answer();
  reply.setState("streaming");
  scrollToEnd(true);
  const controller = new AbortController();
  current = controller;
  placeRegenerate(null);
  setBusy(true);
  setStatus("Streaming…", "busy");
  try {
    const result = await streamChat({
      baseUrl: apiBase,
      model,
      messages: messagesOf(context),
      ...(drawsImages(model) ? { modalities: ["image", "text"] } : {}),
      signal: controller.signal,
      onReasoning(piece) {
        reply.addReasoning(piece);
        if (el.status.textContent === "Streaming…") setStatus("Thinking…", "busy");
      },
      onToken(piece) {
        reply.addText(piece);
        if (el.status.textContent === "Thinking…") setStatus("Streaming…", "busy");
      },
      onImage(image) {
        reply.addImage(image.image_url.url);
      },
      onToolCall(call, index) {
        reply.setToolCall(call, index);
      },
      onReconnecting() {
        setStatus("Reconnecting… the answer will continue when the connection is back.", "warn");
      },
      onReconnected() {
        setStatus("Streaming…", "busy");
      },
    });
    const open = chat === conv;
    reply.setModel(result.model);
    reply.finish(result);
    if (result.finishReason === "cancelled") {
      reply.setState("cancelled");
      reply.addNote("Stopped.");
      if (open) setStatus("Stopped.");
    } else {
      reply.setState("done");
      if (result.finishReason === "length") {
        reply.addNote("The answer was cut off: it reached the length limit.", "warn");
      }
      const spent = describeUsage(result.usage);
      if (open) setStatus(spent ? `Done · ${spent}` : "Done.");
    }
    // Keep what was said, a stopped answer's part too, so the next turn has the context.
    chat.turns = [...context];
    const turn = {
      role: "assistant",
      content: result.text,
      reasoning: result.reasoning,
      reasoningDetails: result.finishReason === "cancelled" ? [] : result.reasoningDetails,
      citations: result.citations,
      usage: result.usage,
      model: result.model,
      finishReason: result.finishReason,
    };
    if (reply.images.length) turn.images = reply.images.filter((i) => i.url);
    if (result.toolCalls?.length) turn.toolCalls = result.toolCalls;
    if (turn.content || turn.images?.length || turn.toolCalls) {
      chat.turns.push(turn);
      reply.addActions();
      if (open) placeRegenerate(reply);
    }
    const dropped = persist(chat);
    if (open) {
      renderChatList();
      tellDropped(dropped);
    }
    return true;
  } catch (error) {
    reply.render();
    reply.endThinking();
    reply.setState("error");
    reply.addNote(describe(error), "error").dataset.code = error.code ?? "error";
    if (chat === conv) {
      setStatus(`Error: ${error.message}`, "error");
      onFailed?.();
    }
    return false;
  } finally {
    if (current === controller) current = null;
    setBusy(false);
    const focused = document.activeElement;
    if (!focused || focused === document.body || focused === el.stop || focused === el.send) el.prompt.focus();
  }
}

async function send() {
  if (current) return;
  const content = el.prompt.value;
  const waiting = pending;
  if (!content.trim() && !waiting.length) return;
  if (waiting.some((entry) => !entry.attachment)) setStatus("Preparing the attachments…", "busy");
  const attachments = (await Promise.all(waiting.map((entry) => entry.ready))).filter(Boolean);
  if (current) return;
  if (!content.trim() && !attachments.length) return;
  pending = pending.filter((entry) => !waiting.includes(entry));
  renderPending();
  el.prompt.value = "";
  grow(el.prompt);
  const turn = { role: "user", content };
  if (attachments.length) turn.attachments = attachments;
  const context = [...conv.turns, turn];
  const mine = addUser(turn, context.length - 1);
  await answer(context, {
    onFailed() {
      mine.item.classList.add("not-sent");
      mine.item.querySelector(".msg-actions")?.remove();
      addNote(mine, "Not kept in the conversation.");
      // Give the message back, so that Enter tries again.
      if (!el.prompt.value) {
        el.prompt.value = content;
        grow(el.prompt);
      }
      if (attachments.length && !pending.length) {
        pending = attachments.map((attachment) => ({
          id: (pendingIds += 1),
          name: attachment.name,
          attachment,
          ready: Promise.resolve(attachment),
        }));
        renderPending();
      }
    },
  });
}

/** Send an edited message again: the answers after it are replaced (one new request). */
async function resend(index, content) {
  if (current) return;
  const old = conv.turns[index];
  if (old?.role !== "user") return;
  if (!content.trim() && !old.attachments?.length) return;
  const kept = conv.turns;
  const context = [...kept.slice(0, index), { ...old, content }];
  renderConversation(context);
  await answer(context, {
    onFailed() {
      // Nothing changed: show the conversation as it is kept, and say why.
      const why = el.status.textContent;
      conv.turns = kept;
      renderConversation();
      setStatus(`${why} The message was not changed.`, "error");
    },
  });
}

/** Ask again for the last answer: one new /prepare and stream, replacing it. */
async function regenerate() {
  if (current) return;
  const last = conv.turns[conv.turns.length - 1];
  if (last?.role !== "assistant") return;
  const answers = el.log.querySelectorAll(".msg.assistant");
  answers[answers.length - 1]?.remove();
  const context = conv.turns.slice(0, -1);
  await answer(context, {
    onFailed() {
      // The old answer is gone from the page, but still the one kept: show it again.
      conv.turns = [...context, last];
      placeRegenerate(showStored(last));
    },
  });
}

function stop() {
  if (!current) return;
  setStatus("Stopping…", "busy");
  current.abort();
}

/** The message box grows with its text, up to a third of the window. */
function grow(area) {
  const limit = Math.max(64, Math.round(window.innerHeight / 3));
  area.style.height = "auto";
  const wanted = area.scrollHeight + (area.offsetHeight - area.clientHeight);
  area.style.height = `${Math.min(wanted, limit)}px`;
  area.style.overflowY = wanted > limit ? "auto" : "hidden";
}

function restore() {
  loadIndex();
  const id = storageGetRaw(CURRENT_KEY);
  const chat = id ? loadChat(id) : null;
  conv = chat ?? newConversation();
  renderConversation();
  renderChatList();
  if (conv.turns.length) setStatus("Conversation restored. New chat starts another; this one stays in the list.");
}

function storageGetRaw(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

// -- the model picker ------------------------------------------------------------------

/** @type {object[]} every model the server allows */
let models = [];

/** Dollars per million tokens, from OpenRouter's per-token price strings. */
function perMillion(price) {
  const value = Number(price) * 1e6;
  const text = value >= 100 ? value.toFixed(0) : value >= 1 ? value.toFixed(2) : value.toPrecision(2);
  return `$${String(Number(text))}`;
}

/** "free", "$2.5 in · $10 out per M tokens", "price varies" or "". */
function priceOf(model) {
  const pricing = model.pricing;
  if (!pricing || typeof pricing !== "object") return "";
  const prompt = Number(pricing.prompt);
  const completion = Number(pricing.completion);
  const given = pricing.prompt !== "" && pricing.completion !== "";
  if (!given || !Number.isFinite(prompt) || !Number.isFinite(completion)) return "";
  if (prompt < 0 || completion < 0) return "price varies";
  if (prompt === 0 && completion === 0) return "free";
  return `${perMillion(prompt)} in · ${perMillion(completion)} out per M tokens`;
}

function modelLabel(model) {
  const price = priceOf(model);
  return price ? `${model.name || model.id} — ${price}` : model.name || model.id;
}

/** The models whose id, name or price has every word of `query`. */
function matching(query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  return models.filter((m) => {
    const hay = `${m.id} ${m.name ?? ""} ${priceOf(m)}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

/** The options, narrowed to the models matching every word of the search. */
function fillModels() {
  const words = el.modelFilter.value.toLowerCase().split(/\s+/).filter(Boolean);
  const chosen = el.model.value;
  const matches = matching(el.modelFilter.value);
  const shown = matches.some((m) => m.id === chosen) ? matches : [...models.filter((m) => m.id === chosen), ...matches];
  el.model.replaceChildren(...shown.map((m) => new Option(modelLabel(m), m.id)));
  if (words.length && !matches.length) {
    const none = new Option(`No model matches “${el.modelFilter.value.trim()}”`, "");
    none.disabled = true;
    el.model.append(none);
  }
  if (chosen && shown.some((m) => m.id === chosen)) el.model.value = chosen;
  el.model.title = el.model.selectedOptions[0]?.textContent ?? "";
  el.modelFilter.dataset.matches = String(matches.length);
}

/** Whether the model can answer with images: OpenRouter then wants `modalities` asked. */
function drawsImages(id) {
  const outputs = models.find((m) => m.id === id)?.architecture?.output_modalities;
  return Array.isArray(outputs) && outputs.includes("image");
}

function chooseModel(id) {
  el.model.value = id;
  el.model.title = el.model.selectedOptions[0]?.textContent ?? "";
  storageSet(MODEL_KEY, id);
}

async function loadModels() {
  let problem = "";
  try {
    const response = await fetch(`${apiBase}/models`, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    if (!response.ok) problem = body?.error?.message ?? `HTTP ${response.status}`;
    else models = (Array.isArray(body?.data) ? body.data : []).filter((m) => typeof m?.id === "string");
  } catch (error) {
    problem = error.message;
  }
  if (!models.length) {
    const why = problem ? `Could not load the model list (${problem})` : "The server lists no models";
    setStatus(`${why}. Using the default model, ${defaultModel}.`, "warn");
    el.modelFilter.hidden = true;
    return;
  }
  models.sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  // The configured default may be missing from the list: offer it anyway.
  if (!demo && defaultModel && !models.some((m) => m.id === defaultModel)) {
    models.unshift({ id: defaultModel, name: `${defaultModel} (default)` });
  }
  const saved = storageGetRaw(MODEL_KEY) ?? "";
  const chosen = [saved, el.model.value, defaultModel].find((id) => id && models.some((m) => m.id === id));
  el.model.replaceChildren(new Option("", chosen ?? models[0].id));
  el.model.value = chosen ?? models[0].id;
  fillModels();
  el.model.dataset.loaded = "true";
  el.modelFilter.hidden = models.length < 2;
}

// -- events ----------------------------------------------------------------------------

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
el.prompt.addEventListener("input", () => grow(el.prompt));
window.addEventListener("resize", () => grow(el.prompt));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && current && !el.viewer.open) {
    event.preventDefault();
    stop();
  } else if (event.key === "Escape" && el.shell.classList.contains("drawer-open")) {
    setDrawer(false);
    el.menu.focus();
  }
});
el.stop.addEventListener("click", stop);
el.newChat.addEventListener("click", newChat);
el.menu.addEventListener("click", () => {
  const open = !el.shell.classList.contains("drawer-open");
  setDrawer(open);
  if (open) (el.chatList.querySelector(".current .chat-open") ?? el.newChat).focus();
});
el.scrim.addEventListener("click", () => setDrawer(false));
el.model.addEventListener("change", () => chooseModel(el.model.value));
el.modelFilter.addEventListener("input", fillModels);
el.modelFilter.addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  // Enter takes the first match, unless the current choice matches too.
  const matches = matching(el.modelFilter.value);
  if (matches.length && !matches.some((m) => m.id === el.model.value)) chooseModel(matches[0].id);
  el.modelFilter.value = "";
  fillModels();
  el.prompt.focus();
});

// Attachments: the button, paste and drop.
el.attach.addEventListener("click", () => el.file.click());
el.file.addEventListener("change", () => {
  addFiles([...el.file.files]);
  el.file.value = "";
  el.prompt.focus();
});
document.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files ?? [])];
  if (!files.length) return;
  // A screenshot or a copied picture is only a file: nothing else to paste. A copy from
  // a document may bring its text along with a picture of it: the text goes in too.
  if (![...event.clipboardData.types].includes("text/plain")) event.preventDefault();
  addFiles(files);
});
let dragDepth = 0;
const carriesFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  el.dropZone.hidden = false;
});
document.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
document.addEventListener("dragleave", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) el.dropZone.hidden = true;
});
document.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  el.dropZone.hidden = true;
  addFiles([...event.dataTransfer.files]);
  el.prompt.focus();
});

restore();
grow(el.prompt);
loadModels().finally(() => {
  document.documentElement.dataset.ready = "true";
});
el.prompt.focus();
