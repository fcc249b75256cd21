// A small Markdown renderer for model answers: fenced code blocks, headings, lists, paragraphs, inline
// code, bold and italics. Model output is untrusted, so every piece of text is HTML-escaped before any
// tag is added, and tags are only ever built around already-escaped text; links and raw HTML are not
// supported at all (nothing an answer says can become a URL, an attribute or a script).

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Code spans first, so that '*' inside them stays literal; then bold before italics, so '**' is not
// read as two empty emphasis markers.
function renderInline(text) {
  return text.split(/(`[^`\n]+`)/).map((segment, i) => {
    if (i % 2 === 1) return `<code>${escapeHtml(segment.slice(1, -1))}</code>`;
    return escapeHtml(segment)
      .replace(/\*\*(?=\S)(.+?)\*\*/g, '<strong>$1</strong>')
      .replace(/__(?=\S)(.+?)__/g, '<strong>$1</strong>')
      .replace(/(^|[^*\w])\*(?=\S)([^*]+?)\*(?!\w)/g, '$1<em>$2</em>')
      .replace(/(^|[^_\w])_(?=\S)([^_]+?)_(?!\w)/g, '$1<em>$2</em>');
  }).join('');
}

const FENCE = /^\s*```\s*([\w+-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const UNORDERED = /^\s*[-*+]\s+(.*)$/;
const ORDERED = /^\s*\d+[.)]\s+(.*)$/;

// Returns HTML for `source`. An unclosed fence runs to the end, which is what a streamed answer looks
// like while its code block is still arriving.
export function renderMarkdown(source) {
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  const out = [];
  let paragraph = [];
  const flushParagraph = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(renderInline).join('<br>')}</p>`);
    paragraph = [];
  };
  for (let i = 0; i < lines.length;) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      flushParagraph();
      const code = [];
      for (i++; i < lines.length && !FENCE.test(lines[i]); i++) code.push(lines[i]);
      i++;  // the closing fence
      const language = fence[1] ? ` data-language="${escapeHtml(fence[1])}"` : '';
      out.push(`<pre${language}><code>${escapeHtml(code.join('\n'))}</code></pre>`);
      continue;
    }
    const list = UNORDERED.test(line) ? UNORDERED : ORDERED.test(line) ? ORDERED : null;
    if (list) {
      flushParagraph();
      const items = [];
      for (; i < lines.length && list.test(lines[i]); i++) items.push(`<li>${renderInline(list.exec(lines[i])[1])}</li>`);
      const tag = list === UNORDERED ? 'ul' : 'ol';
      out.push(`<${tag}>${items.join('')}</${tag}>`);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      flushParagraph();
      const level = heading[1].length;
      out.push(`<h${level}>${renderInline(heading[2])}</h${level}>`);
    } else if (line.trim() === '') {
      flushParagraph();
    } else {
      paragraph.push(line);
    }
    i++;
  }
  flushParagraph();
  return out.join('');
}
