// Text of a row as a reader wants it: Markdown, LaTeX through KaTeX, code highlighted, and the spans a
// verdict points at (marks from /api/row) highlighted in place. Model output is untrusted: raw HTML in it
// is shown as text (marked's html renderer escapes it), links other than http(s) are not links, and the
// page's Content-Security-Policy runs no inline script whatever slips through.
"use strict";

const Render = (() => {
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  // Private-use characters stand for math and mark boundaries while Markdown is parsed.
  const MATH_OPEN = "\uE000", MATH_CLOSE = "\uE001", MARK_OPEN = "\uE002", MARK_MID = "\uE003", MARK_CLOSE = "\uE004";
  const FENCE = /```[\s\S]*?(?:```|$)/g;
  // $$…$$, \[…\], \(…\), $…$ (not \$, not "$ 5", not across a blank line)
  const MATH = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|(?<![\\$])\$(?![\s$])((?:\\.|[^$\\\n]|\n(?!\s*\n))+?)(?<![\s\\])\$(?!\d)/g;
  const BOX = /\\(?:boxed|fbox)\s*\{/g;

  let configured = false;
  function configure() {
    if (configured || !window.marked) return;
    configured = true;
    marked.use({
      gfm: true,
      breaks: true,
      renderer: {
        html(token) { return esc(token.text); },
        link(token) {
          const text = this.parser.parseInline(token.tokens);
          return /^(https?:|mailto:)/i.test(token.href) ? `<a href="${esc(token.href)}" rel="noopener noreferrer" target="_blank">${text}</a>` : text;
        },
        image(token) { return esc(`![${token.text}](${token.href})`); },
      },
    });
  }

  function inside(spans, pos) { return spans.some(([a, b]) => pos >= a && pos < b); }

  // Math segments of a text: {start, end, tex, display}; none inside code fences.
  function mathSegments(text) {
    const fences = [...text.matchAll(FENCE)].map((m) => [m.index, m.index + m[0].length]);
    const out = [];
    for (const m of text.matchAll(MATH)) {
      if (inside(fences, m.index)) continue;
      const tex = m[1] ?? m[2] ?? m[3] ?? m[4];
      out.push({ start: m.index, end: m.index + m[0].length, tex, display: m[1] !== undefined || m[2] !== undefined });
    }
    // a bare \boxed{…} outside any $…$ (R1 often writes one after </think>)
    for (const m of text.matchAll(BOX)) {
      if (inside(fences, m.index) || out.some((s) => m.index >= s.start && m.index < s.end)) continue;
      let depth = 1, j = m.index + m[0].length;
      for (; j < text.length && depth; j++) depth += text[j] === "{" ? 1 : text[j] === "}" ? -1 : 0;
      if (!depth) out.push({ start: m.index, end: j, tex: text.slice(m.index, j), display: false });
    }
    return out.sort((a, b) => a.start - b.start);
  }

  // Marks widened to whole math segments (a highlight cannot cut a formula) and split at blank lines (a
  // highlight cannot cross a Markdown paragraph).
  function fitMarks(text, marks, segs) {
    const out = [];
    for (const m of marks) {
      if (m.kind === "code") continue; // a fence cannot be wrapped: its <pre> gets the highlight instead
      let { start, end } = m;
      // a mark at a line's start begins after its Markdown block syntax (a list dash, a heading's #)
      if (start === 0 || text[start - 1] === "\n") {
        const lead = /^[ \t]*(?:[-*+]|\d+[.)]|#{1,6}|>)[ \t]+/.exec(text.slice(start, end));
        if (lead) start += lead[0].length;
      }
      for (const s of segs) {
        if (s.start < start && start < s.end) start = s.start;
        if (s.start < end && end < s.end) end = s.end;
      }
      let from = start;
      for (const br of text.slice(start, end).matchAll(/\n\s*\n/g)) {
        const at = start + br.index;
        if (!segs.some((s) => at > s.start && at < s.end)) {
          if (at > from) out.push({ ...m, start: from, end: at });
          from = at + br[0].length;
        }
      }
      if (end > from) out.push({ ...m, start: from, end });
    }
    return out;
  }

  function katexHtml(seg) {
    try {
      return katex.renderToString(seg.tex, { displayMode: seg.display, throwOnError: false, output: "html", strict: "ignore", trust: false });
    } catch (e) {
      return `<code class="tex-error">${esc(seg.tex)}</code>`;
    }
  }

  function markOpen(m, k) {
    return `<mark class="mk mk-${esc(m.kind)}" data-kind="${esc(m.kind)}" data-m="${k}" title="${esc(m.note)}">`;
  }

  // Markdown + LaTeX + marks -> HTML
  function rendered(text, marks) {
    configure();
    const segs = mathSegments(text);
    const fitted = fitMarks(text, marks, segs);
    const events = [];
    fitted.forEach((m, k) => { events.push([m.start, 1, k]); events.push([m.end, 0, k]); });
    events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let out = "", pos = 0, e = 0, open = 0;
    const flushEvents = (upto) => {
      while (e < events.length && events[e][0] <= upto) {
        const [at, isOpen, k] = events[e++];
        out += text.slice(pos, at); pos = at;
        if (isOpen) { out += MARK_OPEN + k + MARK_MID; open++; } else if (open) { out += MARK_CLOSE; open--; }
      }
    };
    segs.forEach((s, n) => {
      flushEvents(s.start);
      out += text.slice(pos, s.start) + MATH_OPEN + n + MATH_CLOSE;
      pos = s.end;
    });
    flushEvents(Infinity);
    out += text.slice(pos);
    let html = window.marked ? marked.parse(out) : `<p>${esc(out)}</p>`;
    html = html.replace(new RegExp(`${MATH_OPEN}(\\d+)${MATH_CLOSE}`, "g"), (_, n) => katexHtml(segs[+n]));
    html = html.replace(new RegExp(`${MARK_OPEN}(\\d+)${MARK_MID}`, "g"), (_, k) => markOpen(fitted[+k], k));
    return html.replaceAll(MARK_CLOSE, "</mark>");
  }

  // The text exactly as stored, marks at their offsets
  function raw(text, marks) {
    const sorted = [...marks].sort((a, b) => a.start - b.start);
    let out = "", pos = 0;
    sorted.forEach((m, k) => {
      if (m.start < pos) return; // overlapping marks: the first wins in raw mode
      out += esc(text.slice(pos, m.start)) + markOpen(m, k) + esc(text.slice(m.start, m.end)) + "</mark>";
      pos = m.end;
    });
    return `<pre class="raw">${out + esc(text.slice(pos))}</pre>`;
  }

  // Fill `el` with `text` rendered (or raw), then highlight its code blocks
  function into(el, text, marks = [], mode = "rendered") {
    el.innerHTML = mode === "raw" ? raw(text ?? "", marks) : rendered(text ?? "", marks);
    el.classList.toggle("md", mode !== "raw");
    if (mode !== "raw") {
      for (const block of el.querySelectorAll("pre code")) {
        if (window.hljs && !block.querySelector("mark")) hljs.highlightElement(block);
      }
      if (marks.some((m) => m.kind === "code")) el.querySelectorAll("pre").forEach((p) => p.classList.add("mk-code-block"));
    }
    return el;
  }

  return { esc, into, mathSegments, rendered, raw };
})();
