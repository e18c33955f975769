"""The chat page's Markdown renderer (``static/markdown.js``) in real Chromium.

A table of Markdown inputs and the exact DOM each must become (its serialization),
hostile rows included: raw HTML, ``javascript:`` and other unsafe links, entities,
unclosed fences while streaming. Then :class:`MarkdownView` fed an answer piece by
piece: the same DOM as rendering it whole, finished blocks never rebuilt, and no
prefix of a hostile answer ever making an element or attribute that could run code.
"""

from __future__ import annotations

import html
import typing as t

import pytest

from bench.live import LiveApp
from tests.browser.pages import serve
from tests.browser.pages import wait

pytestmark = [pytest.mark.browser, pytest.mark.live]

LINK_ATTRS = 'rel="noopener noreferrer nofollow" target="_blank"'

RENDER_JS = """
const [source, done] = arguments;
import(new URL('static/markdown.js', document.baseURI).href)
  .then((md) => {
    const box = document.createElement('div');
    box.append(md.renderMarkdown(source));
    done({html: box.innerHTML});
  })
  .catch((error) => done({error: String(error && error.stack || error)}));
"""


def a(href: str, text: str, *, title: str = "", cls: str = "") -> str:
    """The serialization of a link the renderer makes."""
    extra = f' title="{html.escape(title)}"' if title else ""
    klass = f' class="{cls}"' if cls else ""
    return f'<a href="{html.escape(href)}"{extra} {LINK_ATTRS}{klass}>{text}</a>'


def code(lang: str, text: str) -> str:
    """The serialization of a code block (``text`` already HTML-escaped)."""
    klass = f' class="language-{lang}"' if lang else ""
    label = f"Copy {lang} code" if lang else "Copy the code"
    return (
        '<div class="code"><div class="code-bar">'
        f'<span class="lang">{lang or "text"}</span>'
        f'<button class="copy" type="button" aria-label="{label}">Copy</button></div>'
        f"<pre><code{klass}>{text}</code></pre></div>"
    )


def cell(tag: str, text: str, align: str = "") -> str:
    style = f' style="text-align: {align};"' if align else ""
    return f"<{tag}{style}>{text}</{tag}>"


CASES: list[t.Any] = [
    # -- inline --
    pytest.param("Hello *world*", "<p>Hello <em>world</em></p>", id="em"),
    pytest.param(
        "**bold** and __also__",
        "<p><strong>bold</strong> and <strong>also</strong></p>",
        id="strong",
    ),
    pytest.param("***both***", "<p><em><strong>both</strong></em></p>", id="em-strong"),
    pytest.param("snake_case_name", "<p>snake_case_name</p>", id="intraword-underscore"),
    pytest.param("~~gone~~ stays", "<p><del>gone</del> stays</p>", id="strike"),
    pytest.param("Use `a < b` here", "<p>Use <code>a &lt; b</code> here</p>", id="code-span"),
    pytest.param("`` a ` b ``", "<p><code>a ` b</code></p>", id="code-span-backtick"),
    pytest.param("`**not bold**`", "<p><code>**not bold**</code></p>", id="code-span-literal"),
    pytest.param("**unclosed bold", "<p>**unclosed bold</p>", id="unclosed-strong"),
    pytest.param(
        "\\*not em\\* \\<b\\> \\[x](y)", "<p>*not em* &lt;b&gt; [x](y)</p>", id="backslash-escapes"
    ),
    pytest.param(
        "line one  \nline two\\\nline three\nsoft",
        "<p>line one<br>line two<br>line three\nsoft</p>",
        id="line-breaks",
    ),
    # -- blocks --
    pytest.param(
        "# Title\n## Sub ##\n###### six\n####### seven\n# a#\n#\n### b ### c",
        "<h1>Title</h1><h2>Sub</h2><h6>six</h6><p>####### seven</p><h1>a#</h1><h1></h1>"
        "<h3>b ### c</h3>",
        id="atx-headings",
    ),
    pytest.param("Title\n===\n\nSub\n---", "<h1>Title</h1><h2>Sub</h2>", id="setext-headings"),
    pytest.param("a\n\n---\n\nb\n\n* * *", "<p>a</p><hr><p>b</p><hr>", id="thematic-breaks"),
    pytest.param("one\n\n\ntwo", "<p>one</p><p>two</p>", id="paragraphs"),
    pytest.param(
        "```python\ndef f():\n    return 1\n```\nafter",
        code("python", "def f():\n    return 1") + "<p>after</p>",
        id="fenced-code",
    ),
    pytest.param(
        "```html\n<script>alert(1)</script>\n```",
        code("html", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        id="fenced-html-is-text",
    ),
    pytest.param("~~~\n**not bold**\n~~~", code("", "**not bold**"), id="tilde-fence"),
    pytest.param(
        "````\n```\ninner\n```\n````", code("", "```\ninner\n```"), id="longer-fence-nests"
    ),
    pytest.param("    indented\n      code", code("", "indented\n  code"), id="indented-code"),
    pytest.param(
        "- a\n- b\n  - c\n- d",
        "<ul><li>a</li><li>b<ul><li>c</li></ul></li><li>d</li></ul>",
        id="nested-list",
    ),
    pytest.param("1. one\n2. two", "<ol><li>one</li><li>two</li></ol>", id="ordered-list"),
    pytest.param(
        "3) three\n4) four", '<ol start="3"><li>three</li><li>four</li></ol>', id="ordered-start"
    ),
    pytest.param("- a\n\n- b", "<ul><li><p>a</p></li><li><p>b</p></li></ul>", id="loose-list"),
    pytest.param(
        "* star\n+ plus", "<ul><li>star</li></ul><ul><li>plus</li></ul>", id="bullet-kinds"
    ),
    pytest.param(
        "Intro:\n- x\n- y", "<p>Intro:</p><ul><li>x</li><li>y</li></ul>", id="list-after-paragraph"
    ),
    pytest.param(
        "- item\n  ```sh\n  ls -l\n  ```",
        f"<ul><li>item{code('sh', 'ls -l')}</li></ul>",
        id="code-in-list",
    ),
    pytest.param(
        "> quoted *text*\n> more\n>\n> - item",
        "<blockquote><p>quoted <em>text</em>\nmore</p><ul><li>item</li></ul></blockquote>",
        id="blockquote",
    ),
    pytest.param(
        "> ```\n> code\n> ```", f"<blockquote>{code('', 'code')}</blockquote>", id="code-in-quote"
    ),
    pytest.param(
        "| a | b | c |\n|:--|:-:|--:|\n| 1 | **2** | `3` |\n| x |",
        '<div class="table"><table><thead><tr>'
        + cell("th", "a", "left")
        + cell("th", "b", "center")
        + cell("th", "c", "right")
        + "</tr></thead><tbody><tr>"
        + cell("td", "1", "left")
        + cell("td", "<strong>2</strong>", "center")
        + cell("td", "<code>3</code>", "right")
        + "</tr><tr>"
        + cell("td", "x", "left")
        + cell("td", "", "center")
        + cell("td", "", "right")
        + "</tr></tbody></table></div>",
        id="table",
    ),
    pytest.param(
        "a | b\n--- | ---\n`x|y` | c\\|d",
        '<div class="table"><table><thead><tr><th>a</th><th>b</th></tr></thead>'
        "<tbody><tr><td><code>x|y</code></td><td>c|d</td></tr></tbody></table></div>",
        id="table-pipes",
    ),
    pytest.param(
        "| a | b |\n|---|", "<p>| a | b |\n|---|</p>", id="table-delimiter-mismatch-is-text"
    ),
    # -- links --
    pytest.param(
        '[site](https://example.com "Home") and <https://a.example/x?y=1&z=2>',
        "<p>"
        + a("https://example.com/", "site", title="Home")
        + " and "
        + a("https://a.example/x?y=1&z=2", "https://a.example/x?y=1&amp;z=2")
        + "</p>",
        id="links",
    ),
    pytest.param(
        "See https://b.example/path. Or (https://c.example/a_(b)) too",
        "<p>See "
        + a("https://b.example/path", "https://b.example/path")
        + ". Or ("
        + a("https://c.example/a_(b)", "https://c.example/a_(b)")
        + ") too</p>",
        id="bare-urls",
    ),
    pytest.param(
        "[mail](mailto:me@example.com) <me@example.com>",
        "<p>"
        + a("mailto:me@example.com", "mail")
        + " "
        + a("mailto:me@example.com", "me@example.com")
        + "</p>",
        id="mailto",
    ),
    pytest.param(
        "[a **b**](https://x.example)",
        "<p>" + a("https://x.example/", "a <strong>b</strong>") + "</p>",
        id="link-with-emphasis",
    ),
    pytest.param(
        "![pic](https://example.com/p.png) ![bad](javascript:x)",
        "<p>" + a("https://example.com/p.png", "pic", cls="image-link") + " bad</p>",
        id="images-become-links",
    ),
    # -- hostile --
    pytest.param(
        "<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>", id="raw-img"
    ),
    pytest.param(
        "<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>", id="raw-script"
    ),
    pytest.param("[x](javascript:alert(1))", "<p>x</p>", id="javascript-link"),
    pytest.param(
        "[x](JAVASCRIPT:alert(1)) [y](data:text/html,<b>hi</b>) [z](//evil.example) [w](/rel)",
        "<p>x y z w</p>",
        id="unsafe-links",
    ),
    pytest.param(
        "<javascript:alert(1)> <vbscript:x>",
        "<p>&lt;javascript:alert(1)&gt; &lt;vbscript:x&gt;</p>",
        id="unsafe-autolinks",
    ),
    pytest.param(
        '[x](https://e.example/"onmouseover="alert(1))',
        "<p>" + a("https://e.example/%22onmouseover=%22alert(1)", "x") + "</p>",
        id="attribute-injection",
    ),
    pytest.param(
        "```<img src=x>\n1\n```",
        '<div class="code"><div class="code-bar"><span class="lang">&lt;img</span>'
        '<button class="copy" type="button" aria-label="Copy &lt;img code">Copy</button></div>'
        '<pre><code class="language-img">1</code></pre></div>',
        id="fence-info-injection",
    ),
    pytest.param(
        "&lt;b&gt; &amp;amp; &#65;&#x42; &copy; &bogus; &#0;",
        "<p>&lt;b&gt; &amp;amp; AB © &amp;bogus; \ufffd</p>",
        id="entities",
    ),
    pytest.param(
        "&lt;img src=x onerror=alert(1)&gt;",
        "<p>&lt;img src=x onerror=alert(1)&gt;</p>",
        id="entity-encoded-html",
    ),
    # -- streaming --
    pytest.param("```js\nlet x = 1;", code("js", "let x = 1;"), id="unclosed-fence"),
    pytest.param("text\n```", "<p>text</p>" + code("", ""), id="fence-just-opened"),
    pytest.param("Intro:\n-", "<p>Intro:\n-</p>", id="half-list-item-is-not-a-heading"),
]


@pytest.fixture(scope="module")
def page(driver: t.Any) -> t.Iterator[t.Any]:
    """The chat page (demo mode), whose static files include the renderer."""
    with serve(driver, {"NGAI_DEMO": "1", "GUNICORN_GRACEFUL_TIMEOUT": "3"}) as app:
        open_blank_page(driver, app)
        yield driver


def open_blank_page(driver: t.Any, app: LiveApp) -> None:
    driver.get(app.url("/"))
    wait(driver).until(lambda d: d.execute_script("return document.readyState === 'complete'"))


def render(driver: t.Any, source: str) -> str:
    result = driver.execute_async_script(RENDER_JS, source)
    assert "error" not in result, result["error"]
    return t.cast(str, result["html"])


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_renders(page: t.Any, source: str, expected: str) -> None:
    assert render(page, source) == expected


HOSTILE_ANSWER = (
    'Here is *my* answer <img src=x onerror="window.__pwned=1">.\n\n'
    "[click](javascript:window.__pwned=2) and <a href=javascript:window.__pwned=3>a</a>\n\n"
    "| h | <b onclick=window.__pwned=4>x</b> |\n|---|---|\n"
    "| <script>window.__pwned=5</script> | y |\n\n"
    "```html\n<svg onload=window.__pwned=6>\n```\n\n"
    "> <iframe src=javascript:window.__pwned=7></iframe>\n\n"
    "- ![i](javascript:window.__pwned=8)\n- [ok](https://example.com/ok)\n"
)

STREAM_JS = """
const [source, step, done] = arguments;
import(new URL('static/markdown.js', document.baseURI).href).then((md) => {
  const root = document.createElement('div');
  document.body.append(root);
  const view = new md.MarkdownView(root);
  const removed = [];
  const seen = new Set();
  const observer = new MutationObserver((records) => {
    for (const r of records) for (const n of r.removedNodes) removed.push(n);
  });
  observer.observe(root, {childList: true});
  const allowed = new Set(['P','EM','STRONG','DEL','CODE','PRE','A','BR','H1','H2','H3','H4',
    'H5','H6','HR','UL','OL','LI','BLOCKQUOTE','TABLE','THEAD','TBODY','TR','TH','TD','DIV',
    'SPAN','BUTTON']);
  const problems = [];
  let firstBlock = null;
  let firstBlockAt = -1;
  for (let end = 1; end <= source.length; end += step) {
    view.update(source.slice(0, end));
    observer.takeRecords().forEach((r) => r.removedNodes.forEach((n) => removed.push(n)));
    if (!firstBlock && root.children.length > 1) {
      firstBlock = root.firstChild;
      firstBlockAt = end;
    }
    for (const node of root.querySelectorAll('*')) {
      if (!allowed.has(node.tagName)) problems.push(`${end}: <${node.tagName}>`);
      for (const attr of node.attributes) {
        if (/^on/i.test(attr.name)) problems.push(`${end}: ${attr.name} on <${node.tagName}>`);
      }
      if (node.tagName === 'A' && !/^(https?:|mailto:)/.test(node.getAttribute('href'))) {
        problems.push(`${end}: href ${node.getAttribute('href')}`);
      }
    }
  }
  view.update(source);
  const whole = document.createElement('div');
  whole.append(md.renderMarkdown(source));
  done({
    streamed: root.innerHTML,
    whole: whole.innerHTML,
    problems: problems.slice(0, 20),
    firstKept: root.firstChild === firstBlock,
    firstRemoved: removed.includes(firstBlock),
    firstBlockAt,
    blocks: root.children.length,
    pwned: window.__pwned ?? null,
  });
  root.remove();
}).catch((error) => done({error: String(error && error.stack || error)}));
"""


@pytest.mark.parametrize("step", [1, 7])
def test_streamed_rendering_matches_and_keeps_finished_blocks(page: t.Any, step: int) -> None:
    result = page.execute_async_script(STREAM_JS, HOSTILE_ANSWER, step)
    assert "error" not in result, result["error"]
    assert result["problems"] == []
    assert result["streamed"] == result["whole"]
    assert result["blocks"] >= 6
    # The first paragraph, once finished, was never rebuilt while the rest streamed in.
    assert 0 < result["firstBlockAt"] < len(HOSTILE_ANSWER) / 2
    assert result["firstKept"] and not result["firstRemoved"]
    assert result["pwned"] is None
    assert "&lt;img src=x onerror=" in result["whole"]
    assert a("https://example.com/ok", "ok") in result["whole"]
    assert 'href="javascript' not in result["whole"]


TIMED_RENDER_JS = """
const [source, done] = arguments;
import(new URL('static/markdown.js', document.baseURI).href).then((md) => {
  const started = performance.now();
  const box = document.createElement('div');
  box.append(md.renderMarkdown(source));
  done({ms: performance.now() - started, text: box.textContent.length});
}).catch((error) => done({error: String(error && error.stack || error)}));
"""


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("a *b " * 10_000, id="unclosed-stars"),
        pytest.param("a _b " * 10_000, id="unclosed-underscores"),
        pytest.param("a ~~b " * 8_000, id="unclosed-tildes"),
        pytest.param("[x " * 15_000, id="unclosed-brackets"),
        pytest.param("`a " * 15_000, id="unclosed-backticks"),
        pytest.param("*a " * 8_000 + "a* " * 8_000, id="nested-emphasis"),
        pytest.param("[a " * 4_000 + "b" + "](https://x.example)" * 4_000, id="nested-links"),
        pytest.param(">" * 40_000 + " deep", id="nested-quotes"),
        pytest.param("- " * 20_000 + "deep", id="nested-lists"),
        pytest.param("# a" + " " * 40_000 + "x", id="heading-spaces"),
        pytest.param("https://x.example/" + "." * 40_000 + "a", id="url-dots"),
        pytest.param("line  \n" * 10_000, id="many-hard-breaks"),
    ],
)
def test_hostile_text_renders_in_linear_time(page: t.Any, source: str) -> None:
    # Every frame of a streaming answer renders its last block again: text that opens
    # many things and closes none must not take quadratic time (seconds at this size).
    result = page.execute_async_script(TIMED_RENDER_JS, source)
    assert "error" not in result, result["error"]
    assert result["ms"] < 1000, f"{len(source)} characters took {result['ms']:.0f} ms"
    assert result["text"] > len(source) / 3
