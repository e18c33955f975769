/**
 * markdown.js: a small, dependency-free Markdown renderer for untrusted text.
 *
 *     import { MarkdownView, renderMarkdown } from "./markdown.js";
 *     const view = new MarkdownView(element);
 *     view.update(textSoFar);              // call again as the text grows
 *     element.append(renderMarkdown(text)); // or render once
 *
 * Model output is untrusted, so it only ever becomes DOM nodes and text
 * (createElement / textContent), never HTML: raw HTML in the source shows as the
 * text it is, and links are made only for http:, https: and mailto: URLs (any other
 * link shows its label as plain text). Images become links to the image, so that
 * model output cannot make the browser fetch anything by itself.
 *
 * What it renders: paragraphs, soft and hard line breaks, *emphasis*, **strong**,
 * ~~strike~~, `inline code`, fenced code blocks (with a Copy button), indented code,
 * ATX and setext headings, block quotes, ordered and unordered lists (nested),
 * GitHub tables, thematic breaks, links, autolinks (<https://…>, bare https://…),
 * backslash escapes and HTML entities. It is CommonMark in spirit, not to the letter.
 *
 * MarkdownView re-renders as text streams in without flicker: top-level blocks
 * whose source did not change keep their DOM nodes, so only the growing last block
 * is rebuilt, and the page keeps its scroll position and the reader's selection. An
 * unclosed code fence renders as a code block while it streams.
 *
 * @module markdown
 */

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
/** How deep block quotes and lists may nest before the rest is plain text. */
const MAX_BLOCK_DEPTH = 12;

const FENCE = /^( {0,3})(`{3,}|~{3,})(.*)$/;
const CLOSE_FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;
const ATX = /^ {0,3}(#{1,6})(?=[ \t]|$)(.*)$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^( {0,3})([-+*]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
// Three or more: a lone "-" is the start of a list item far more often, while streaming.
const SETEXT = /^ {0,3}(={3,}|-{3,})[ \t]*$/;
const TABLE_DELIMITER = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const ENTITY = /^&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|([a-zA-Z][a-zA-Z0-9]{1,31}));/;
const AUTOLINK = /^<([a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>/;
const EMAIL_AUTOLINK = /^<([a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*)>/;
const BARE_URL = /^https?:\/\/[^\s<>]+/;
const PUNCTUATION = /[!-/:-@[-`{-~\p{P}\p{S}]/u;
const ESCAPABLE = /[!-/:-@[-`{-~]/;
const WORD = /[\p{L}\p{N}]/u;
/** What ends a bare URL's match but is taken to end the sentence instead. */
const TRAILING_PUNCTUATION = new Set([...".,:;!?'\"*_~"]);

/** The named entities worth decoding; others stay as typed. */
const ENTITIES = {
  amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0", copy: "©", reg: "®",
  trade: "™", hellip: "…", mdash: "—", ndash: "–", lsquo: "‘", rsquo: "’", ldquo: "“",
  rdquo: "”", laquo: "«", raquo: "»", middot: "·", bull: "•", deg: "°", times: "×",
  divide: "÷", plusmn: "±", euro: "€", pound: "£", yen: "¥", cent: "¢", sect: "§",
  para: "¶", larr: "←", rarr: "→", uarr: "↑", darr: "↓", harr: "↔", le: "≤", ge: "≥",
  ne: "≠", infin: "∞", check: "✓", shy: "\u00ad", zwj: "\u200d", zwnj: "\u200c",
};

// -- helpers ------------------------------------------------------------------------

const isBlank = (line) => /^[ \t]*$/.test(line);

/** Columns of leading whitespace (a tab reaches the next multiple of 4). */
function indentOf(line) {
  let cols = 0;
  for (const ch of line) {
    if (ch === " ") cols += 1;
    else if (ch === "\t") cols += 4 - (cols % 4);
    else break;
  }
  return cols;
}

/** `line` without its first `n` columns of leading whitespace. */
function dedent(line, n) {
  let cols = 0;
  let i = 0;
  while (i < line.length && cols < n) {
    if (line[i] === " ") cols += 1;
    else if (line[i] === "\t") {
      const width = 4 - (cols % 4);
      if (cols + width > n) return " ".repeat(cols + width - n) + line.slice(i + 1);
      cols += width;
    } else break;
    i += 1;
  }
  return line.slice(i);
}

/**
 * The URL a link may point at, normalized, or null: only an explicit http:, https: or
 * mailto: URL (no relative or protocol-relative ones, whatever the page's own URL).
 */
export function safeUrl(raw) {
  const text = String(raw ?? "").trim();
  if (!/^(?:https?:\/\/|mailto:)/i.test(text)) return null;
  try {
    const url = new URL(text);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

// -- blocks -------------------------------------------------------------------------

/** Whether `line` starts a block that ends a paragraph. */
function interrupts(line) {
  if (FENCE.test(line) || ATX.test(line) || HR.test(line) || QUOTE.test(line)) return true;
  const item = LIST_ITEM.exec(line);
  // An ordered list interrupts a paragraph only from 1, an empty item never does.
  return Boolean(item && item[4]?.trim() && (!/\d/.test(item[2]) || parseInt(item[2], 10) === 1));
}

/** Split a table row into its cells: pipes outside code spans, not escaped. */
function cells(line) {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  const out = [];
  let cell = "";
  let ticks = 0;
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i];
    if (ch === "\\" && text[i + 1] === "|") {
      cell += "|";
      i += 1;
    } else if (ch === "`") {
      let run = 1;
      while (text[i + run] === "`") run += 1;
      ticks = ticks === run ? 0 : ticks || run;
      cell += "`".repeat(run);
      i += run - 1;
    } else if (ch === "|" && !ticks) {
      out.push(cell.trim());
      cell = "";
    } else cell += ch;
  }
  out.push(cell.trim());
  return out;
}

/**
 * Parse lines into blocks. Each block records `raw`, the source lines it covers.
 *
 * @param {string[]} lines
 * @returns {object[]}
 */
function parseBlocks(lines, depth = 0) {
  if (depth > MAX_BLOCK_DEPTH) {
    // Quotes in lists in quotes…: past a sane depth the rest is one paragraph of text.
    const text = lines.join("\n");
    return text.trim() ? [{ type: "paragraph", text, raw: text }] : [];
  }
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i += 1;
      continue;
    }
    const start = i;
    let block;
    let m;
    const fence = FENCE.exec(line);
    if (fence && !(fence[2][0] === "`" && fence[3].includes("`"))) {
      const [, indent, marks, info] = fence;
      const body = [];
      let closed = false;
      i += 1;
      while (i < lines.length) {
        const close = CLOSE_FENCE.exec(lines[i]);
        if (close && close[1][0] === marks[0] && close[1].length >= marks.length) {
          closed = true;
          i += 1;
          break;
        }
        body.push(dedent(lines[i], indent.length));
        i += 1;
      }
      block = { type: "code", lang: unescape(info.trim().split(/\s+/)[0] ?? ""), text: body.join("\n"), closed };
    } else if ((m = ATX.exec(line))) {
      const text = withoutClosingHashes(m[2]);
      block = { type: "heading", level: m[1].length, text };
      i += 1;
    } else if (HR.test(line)) {
      block = { type: "hr" };
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        inner.push(lines[i].replace(QUOTE, ""));
        i += 1;
      }
      block = { type: "quote", children: parseBlocks(inner, depth + 1) };
    } else if ((m = LIST_ITEM.exec(line))) {
      [block, i] = parseList(lines, i, depth);
    } else if (indentOf(line) >= 4) {
      const body = [];
      while (i < lines.length && (isBlank(lines[i]) || indentOf(lines[i]) >= 4)) {
        body.push(dedent(lines[i], 4));
        i += 1;
      }
      while (body.length && isBlank(body[body.length - 1])) {
        body.pop();
        i -= 1;
      }
      block = { type: "code", lang: "", text: body.join("\n"), closed: true };
    } else if (
      line.includes("|") &&
      i + 1 < lines.length &&
      TABLE_DELIMITER.test(lines[i + 1]) &&
      cells(lines[i + 1]).length === cells(line).length
    ) {
      const head = cells(line);
      const align = cells(lines[i + 1]).map((spec) => {
        const left = spec.startsWith(":");
        const right = spec.endsWith(":");
        return left && right ? "center" : right ? "right" : left ? "left" : "";
      });
      const rows = [];
      i += 2;
      while (i < lines.length && !isBlank(lines[i]) && !interrupts(lines[i])) {
        const row = cells(lines[i]);
        rows.push(head.map((_, col) => row[col] ?? ""));
        i += 1;
      }
      block = { type: "table", head, align, rows };
    } else {
      const text = [line];
      i += 1;
      let level = 0;
      while (i < lines.length && !isBlank(lines[i])) {
        const setext = SETEXT.exec(lines[i]);
        if (setext) {
          level = setext[1][0] === "=" ? 1 : 2;
          i += 1;
          break;
        }
        if (interrupts(lines[i])) break;
        text.push(lines[i]);
        i += 1;
      }
      const joined = text.join("\n");
      block = level ? { type: "heading", level, text: joined.trim() } : { type: "paragraph", text: joined };
    }
    block.raw = lines.slice(start, i).join("\n");
    blocks.push(block);
  }
  return blocks;
}

/** Parse the list that starts at `lines[start]`; returns it and the next line's index. */
function parseList(lines, start, depth) {
  const first = LIST_ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const kind = first[2].slice(-1);
  const items = [];
  let loose = false;
  let i = start;
  while (i < lines.length) {
    const m = LIST_ITEM.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered || m[2].slice(-1) !== kind || HR.test(lines[i])) break;
    const spaces = m[3] ? indentOf(m[3]) : 1;
    // Five or more spaces after the marker: the item starts with indented code.
    const offset = m[1].length + m[2].length + (spaces > 4 ? 1 : spaces);
    const body = [m[3] && spaces > 4 ? " ".repeat(spaces - 1) + m[4] : (m[4] ?? "")];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        body.push("");
      } else if (indentOf(line) >= offset) {
        body.push(dedent(line, offset));
      } else if (!isBlank(body[body.length - 1]) && !interrupts(line) && !LIST_ITEM.test(line)) {
        body.push(line); // a lazy continuation of the item's paragraph
      } else break;
      i += 1;
    }
    while (body.length > 1 && isBlank(body[body.length - 1])) {
      body.pop();
      i -= 1;
    }
    const children = parseBlocks(body, depth + 1);
    // Blank lines between an item's blocks, or between items, make the list loose.
    if (body.some((line, n) => n > 0 && isBlank(line)) && children.length > 1) loose = true;
    items.push(children);
    if (i < lines.length && isBlank(lines[i])) {
      let next = i;
      while (next < lines.length && isBlank(lines[next])) next += 1;
      const after = next < lines.length ? LIST_ITEM.exec(lines[next]) : null;
      if (!after || /\d/.test(after[2]) !== ordered || after[2].slice(-1) !== kind) break;
      loose = true;
      i = next;
    }
  }
  return [{ type: "list", ordered, start: ordered ? parseInt(first[2], 10) : 1, items, loose }, i];
}

/** A heading's text without its optional closing `#`s (loops, not regexes: no backtracking). */
function withoutClosingHashes(raw) {
  let text = raw.trim();
  let end = text.length;
  while (end > 0 && text[end - 1] === "#") end -= 1;
  if (end === 0) return "";
  if (end < text.length && (text[end - 1] === " " || text[end - 1] === "\t")) text = text.slice(0, end);
  return text.trim();
}

/** Undo backslash escapes (for a code fence's language and link destinations). */
function unescape(text) {
  return text.replace(/\\([!-/:-@[-`{-~])/g, "$1");
}

/** Split Markdown source into top-level blocks. */
export function parse(source) {
  return parseBlocks(String(source ?? "").split(/\r\n|\r|\n/));
}

// -- inline -------------------------------------------------------------------------

/** Whether the delimiter run at text[start, end) can open / close emphasis. */
function flanking(text, start, end) {
  const before = start > 0 ? text[start - 1] : " ";
  const after = end < text.length ? text[end] : " ";
  const spaceBefore = /\s/.test(before);
  const spaceAfter = /\s/.test(after);
  const punctBefore = PUNCTUATION.test(before);
  const punctAfter = PUNCTUATION.test(after);
  const left = !spaceAfter && (!punctAfter || spaceBefore || punctBefore);
  const right = !spaceBefore && (!punctBefore || spaceAfter || punctAfter);
  if (text[start] === "_") {
    return { open: left && (!right || punctBefore), close: right && (!left || punctAfter) };
  }
  return { open: left, close: right };
}

/**
 * What inline parsing needs to know about one text, worked out once: where code
 * spans and brackets close, and which delimiters never do. It keeps rendering linear
 * in the text's length, even for text that opens a thousand things and closes none
 * (each frame of a streaming answer renders its last block again).
 */
class Scan {
  /** @param {string} text */
  constructor(text) {
    this.text = text;
    /** @type {Map<number, number>} backtick run start -> its length */
    this.runs = new Map();
    /** @type {Map<number, number>} backtick run start -> the next run of that length, or -1 */
    this.nextRun = new Map();
    /** @type {Map<number, number> | null} "[" index -> its "]" index */
    this.pairs = null;
    /** @type {Set<string>} emphasis delimiters that found no closer: later ones will not */
    this.unclosed = new Set();
    const starts = [];
    for (let i = 0; i < text.length; i += 1) {
      if (text[i] !== "`") continue;
      let run = 1;
      while (text[i + run] === "`") run += 1;
      this.runs.set(i, run);
      starts.push(i);
      i += run - 1;
    }
    const later = new Map();
    for (let n = starts.length - 1; n >= 0; n -= 1) {
      const run = this.runs.get(starts[n]);
      this.nextRun.set(starts[n], later.get(run) ?? -1);
      later.set(run, starts[n]);
    }
  }

  /** Index past the code span opened by the backtick run at `i`, or -1 when none closes it. */
  codeEnd(i) {
    const next = this.nextRun.get(i);
    return next === undefined || next < 0 ? -1 : next + this.runs.get(next);
  }

  /** Index of the `]` that closes the `[` at `i`, or -1. */
  bracketEnd(i) {
    if (!this.pairs) {
      this.pairs = new Map();
      const open = [];
      const text = this.text;
      for (let j = 0; j < text.length; j += 1) {
        const ch = text[j];
        if (ch === "\\") j += 1;
        else if (ch === "`" && this.runs.has(j)) {
          const end = this.codeEnd(j);
          j = (end > 0 ? end : j + this.runs.get(j)) - 1;
        } else if (ch === "[") open.push(j);
        else if (ch === "]" && open.length) this.pairs.set(open.pop(), j);
      }
    }
    return this.pairs.get(i) ?? -1;
  }
}

/** Parse `(dest "title")` at `i`; returns {dest, title, end} or null. */
function linkTail(text, i) {
  if (text[i] !== "(") return null;
  let j = i + 1;
  while (text[j] === " " || text[j] === "\t" || text[j] === "\n") j += 1;
  let dest = "";
  if (text[j] === "<") {
    const close = text.indexOf(">", j);
    if (close < 0 || text.slice(j, close).includes("\n")) return null;
    dest = text.slice(j + 1, close);
    j = close + 1;
  } else {
    let depth = 0;
    const from = j;
    while (j < text.length) {
      const ch = text[j];
      if (ch === "\\" && ESCAPABLE.test(text[j + 1] ?? "")) j += 2;
      else if (/\s/.test(ch) || ch.charCodeAt(0) < 0x20) break;
      else if (ch === "(") {
        depth += 1;
        j += 1;
      } else if (ch === ")") {
        if (depth === 0) break;
        depth -= 1;
        j += 1;
      } else j += 1;
    }
    dest = text.slice(from, j);
  }
  while (text[j] === " " || text[j] === "\t" || text[j] === "\n") j += 1;
  let title = "";
  const quote = text[j];
  if (quote === '"' || quote === "'" || quote === "(") {
    const closeChar = quote === "(" ? ")" : quote;
    const close = text.indexOf(closeChar, j + 1);
    if (close < 0) return null;
    title = text.slice(j + 1, close);
    j = close + 1;
    while (text[j] === " " || text[j] === "\t" || text[j] === "\n") j += 1;
  }
  if (text[j] !== ")") return null;
  return { dest: unescape(dest), title: unescape(title), end: j + 1 };
}

function link(href, title) {
  const a = el("a");
  a.href = href;
  if (title) a.title = title;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}

/**
 * Append the inline content of `text` to `parent`.
 *
 * @param {string} text @param {Node} parent @param {boolean} [inLink] no links inside links
 */
function inline(text, parent, inLink = false) {
  // Emphasis in a link in emphasis…: past a sane depth the rest is text, so that
  // hostile nesting can neither overflow the stack nor take quadratic time.
  if (inlineDepth >= MAX_INLINE_DEPTH) {
    parent.append(document.createTextNode(text));
    return;
  }
  inlineDepth += 1;
  try {
    inlineRun(text, parent, inLink);
  } finally {
    inlineDepth -= 1;
  }
}

const MAX_INLINE_DEPTH = 16;
let inlineDepth = 0;

function inlineRun(text, parent, inLink) {
  const scan = new Scan(text);
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === "\\") {
      const next = text[i + 1];
      if (next === "\n") {
        flush();
        parent.append(el("br"));
        i += 2;
        continue;
      }
      if (next !== undefined && ESCAPABLE.test(next)) {
        buffer += next;
        i += 2;
        continue;
      }
      buffer += ch;
      i += 1;
      continue;
    }
    if (ch === "\n") {
      // endsWith, not a regex: a regex anchored at $ scans the whole buffer each time.
      const hard = buffer.endsWith("  ");
      if (hard) {
        let end = buffer.length;
        while (end > 0 && buffer[end - 1] === " ") end -= 1;
        buffer = buffer.slice(0, end);
        flush();
        parent.append(el("br"));
      } else buffer += ch;
      i += 1;
      continue;
    }
    if (ch === "`") {
      const end = scan.codeEnd(i);
      const run = scan.runs.get(i) ?? 1;
      if (end < 0) {
        buffer += "`".repeat(run);
        i += run;
        continue;
      }
      let code = text.slice(i + run, end - run).replace(/\n/g, " ");
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim()) code = code.slice(1, -1);
      flush();
      const node = el("code");
      node.textContent = code;
      parent.append(node);
      i = end;
      continue;
    }
    if (ch === "*" || ch === "_" || ch === "~") {
      let run = 1;
      while (text[i + run] === ch) run += 1;
      const done = emphasis(scan, i, run, parent, flush, inLink);
      if (done > 0) {
        i = done;
        continue;
      }
      buffer += ch.repeat(run);
      i += run;
      continue;
    }
    if (ch === "!" && text[i + 1] === "[") {
      const close = scan.bracketEnd(i + 1);
      const tail = close > 0 ? linkTail(text, close + 1) : null;
      if (tail) {
        flush();
        const alt = text.slice(i + 2, close);
        const href = safeUrl(tail.dest);
        // An image becomes a link to it: the page never loads what a model points at.
        const target = href && !inLink ? link(href, tail.title) : parent;
        if (target !== parent) target.className = "image-link";
        target.append(document.createTextNode(alt || "image"));
        if (target !== parent) parent.append(target);
        i = tail.end;
        continue;
      }
    }
    if (ch === "[") {
      const close = scan.bracketEnd(i);
      const tail = close > 0 ? linkTail(text, close + 1) : null;
      if (tail) {
        flush();
        const href = safeUrl(tail.dest);
        const label = text.slice(i + 1, close);
        if (href && !inLink) {
          const a = link(href, tail.title);
          inline(label, a, true);
          parent.append(a);
        } else {
          inline(label, parent, inLink); // not a safe link: its label as text
        }
        i = tail.end;
        continue;
      }
    }
    if (ch === "<") {
      const rest = text.slice(i);
      const auto = AUTOLINK.exec(rest);
      const email = auto ? null : EMAIL_AUTOLINK.exec(rest);
      const href = auto ? safeUrl(auto[1]) : email ? safeUrl(`mailto:${email[1]}`) : null;
      if (href && !inLink) {
        flush();
        const a = link(href);
        a.textContent = (auto ?? email)[1];
        parent.append(a);
        i += (auto ?? email)[0].length;
        continue;
      }
    }
    if (ch === "&") {
      const m = ENTITY.exec(text.slice(i));
      const decoded = m ? decodeEntity(m) : null;
      if (decoded !== null) {
        buffer += decoded;
        i += m[0].length;
        continue;
      }
    }
    if (ch === "h" && !inLink && (i === 0 || !WORD.test(text[i - 1]))) {
      const m = BARE_URL.exec(text.slice(i));
      if (m) {
        let url = m[0];
        while (url.length && TRAILING_PUNCTUATION.has(url[url.length - 1])) url = url.slice(0, -1);
        // A closing parenthesis belongs to the URL only when it has an opening one.
        while (url.endsWith(")") && (url.match(/\(/g) ?? []).length < (url.match(/\)/g) ?? []).length) {
          url = url.slice(0, -1);
        }
        const href = safeUrl(url);
        if (href && url.length > "https://".length) {
          flush();
          const a = link(href);
          a.textContent = url;
          parent.append(a);
          i += url.length;
          continue;
        }
      }
    }
    buffer += ch;
    i += 1;
  }
  flush();
}

function decodeEntity(m) {
  if (m[3] !== undefined) return Object.hasOwn(ENTITIES, m[3]) ? ENTITIES[m[3]] : null;
  const code = m[1] !== undefined ? parseInt(m[1], 10) : parseInt(m[2], 16);
  if (code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return "\ufffd";
  return String.fromCodePoint(code);
}

/**
 * Emphasis, strong or strikethrough opened by the run of `run` delimiters at `i`.
 * Appends it and returns the index after its closer, or -1 when it is not emphasis.
 */
function emphasis(scan, i, run, parent, flush, inLink) {
  const text = scan.text;
  const ch = text[i];
  const key = ch === "~" ? `~${run}` : ch;
  if ((ch === "~" && run > 2) || scan.unclosed.has(key)) return -1;
  if (!flanking(text, i, i + run).open) return -1;
  let j = i + run;
  while (j < text.length) {
    const c = text[j];
    if (c === "\\") {
      j += 2;
      continue;
    }
    if (c === "`" && scan.runs.has(j)) {
      const end = scan.codeEnd(j);
      j = end > 0 ? end : j + scan.runs.get(j);
      continue;
    }
    if (c === "[") {
      // a link's label is its own unit: no closer inside it
      const close = scan.bracketEnd(j);
      const tail = close > 0 ? linkTail(text, close + 1) : null;
      if (tail) {
        j = tail.end;
        continue;
      }
    }
    if (c !== ch) {
      j += 1;
      continue;
    }
    let close = 1;
    while (text[j + close] === ch) close += 1;
    const fits = ch === "~" ? close === run : true;
    if (fits && flanking(text, j, j + close).close) {
      let use;
      if (ch === "~") use = run;
      else if (run >= 3 && close >= 3) use = 3;
      else if (run >= 2 && close >= 2) use = 2;
      else use = 1;
      const content = text.slice(i + run, j);
      if (!content.trim()) return -1;
      // Opening delimiters beyond what the closer matches stay literal before it.
      flush();
      if (run > use) parent.append(document.createTextNode(ch.repeat(run - use)));
      let outer;
      let inner;
      if (ch === "~") outer = inner = el("del");
      else if (use === 3) {
        outer = el("em");
        inner = el("strong");
        outer.append(inner);
      } else outer = inner = el(use === 2 ? "strong" : "em");
      inline(content, inner, inLink);
      parent.append(outer);
      return j + use;
    }
    j += close;
  }
  scan.unclosed.add(key);
  return -1;
}

// -- rendering ----------------------------------------------------------------------

/** Put `text` on the clipboard (with a fallback where the Clipboard API is missing). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // no clipboard API (an insecure context) or no permission: select and copy
    const area = el("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

function codeBlock(block) {
  const box = el("div", "code");
  const bar = el("div", "code-bar");
  const lang = el("span", "lang");
  lang.textContent = block.lang || "text";
  const button = el("button", "copy");
  button.type = "button";
  button.textContent = "Copy";
  button.setAttribute("aria-label", `Copy ${block.lang || "the"} code`);
  button.addEventListener("click", async () => {
    const ok = await copyText(code.textContent);
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  });
  bar.append(lang, button);
  const pre = el("pre");
  const code = el("code");
  const language = block.lang.replace(/[^\w+#.-]/g, "");
  if (language) code.className = `language-${language}`;
  code.textContent = block.text;
  pre.append(code);
  box.append(bar, pre);
  return box;
}

/** @returns {Node} the DOM of one block */
function renderBlock(block, tight = false) {
  switch (block.type) {
    case "paragraph": {
      if (tight) {
        const fragment = document.createDocumentFragment();
        inline(block.text, fragment);
        return fragment;
      }
      const p = el("p");
      inline(block.text, p);
      return p;
    }
    case "heading": {
      const h = el(`h${block.level}`);
      inline(block.text, h);
      return h;
    }
    case "hr":
      return el("hr");
    case "code":
      return codeBlock(block);
    case "quote": {
      const quote = el("blockquote");
      for (const child of block.children) quote.append(renderBlock(child));
      return quote;
    }
    case "list": {
      const list = el(block.ordered ? "ol" : "ul");
      if (block.ordered && block.start !== 1) list.start = block.start;
      for (const item of block.items) {
        const li = el("li");
        for (const child of item) li.append(renderBlock(child, !block.loose));
        list.append(li);
      }
      return list;
    }
    case "table": {
      const wrap = el("div", "table");
      const table = el("table");
      const row = (values, tag) => {
        const tr = el("tr");
        values.forEach((value, col) => {
          const cell = el(tag);
          if (block.align[col]) cell.style.textAlign = block.align[col];
          inline(value, cell);
          tr.append(cell);
        });
        return tr;
      };
      const thead = el("thead");
      thead.append(row(block.head, "th"));
      table.append(thead);
      if (block.rows.length) {
        const tbody = el("tbody");
        for (const values of block.rows) tbody.append(row(values, "td"));
        table.append(tbody);
      }
      wrap.append(table);
      return wrap;
    }
    default:
      return document.createTextNode("");
  }
}

/**
 * Render Markdown source to DOM nodes.
 *
 * @param {string} source untrusted Markdown
 * @returns {DocumentFragment}
 */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  for (const block of parse(source)) fragment.append(renderBlock(block));
  return fragment;
}

/** A container whose Markdown is re-rendered as its source grows, block by block. */
export class MarkdownView {
  /** @param {Element} root where the rendered blocks go (it is emptied) */
  constructor(root) {
    this.root = root;
    this.source = "";
    /** @type {{raw: string, node: Node}[]} the rendered top-level blocks, in order */
    this.parts = [];
    root.replaceChildren();
  }

  /**
   * Show `source`: blocks that did not change keep their nodes; the rest are rebuilt.
   *
   * @param {string} source the whole Markdown text so far
   */
  update(source) {
    if (source === this.source) return;
    this.source = source;
    const blocks = parse(source);
    let same = 0;
    while (same < blocks.length && same < this.parts.length && this.parts[same].raw === blocks[same].raw) {
      same += 1;
    }
    const parts = this.parts.slice(0, same);
    for (let n = same; n < blocks.length; n += 1) {
      const node = renderBlock(blocks[n]);
      const old = this.parts[n];
      // replaceWith swaps in one step: the page never paints the block missing.
      if (old) old.node.replaceWith(node);
      else this.root.append(node);
      parts.push({ raw: blocks[n].raw, node });
    }
    for (const old of this.parts.slice(blocks.length)) old.node.remove();
    this.parts = parts;
  }
}
