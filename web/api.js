// The page's only way to the server: the public OpenAI-compatible API (/v1/models and streamed
// /v1/chat/completions), with the API key the user typed, if the server asks for one.

const KEY_STORAGE = 'fastvlm.apiKey';

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// sessionStorage: the key lives as long as the tab, and is never written to disk with the settings.
export function setApiKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

function headers() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const result = { 'Content-Type': 'application/json' };
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

async function errorOf(response) {
  let message = `HTTP ${response.status}`;
  try {
    message = (await response.json()).error?.message ?? message;
  } catch {
    // Not the server's JSON error (a proxy's page, say): the status says enough.
  }
  return new ApiError(message, response.status);
}

export async function listModels() {
  const response = await fetch('/v1/models', { headers: headers() });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()).data;
}

// A fresh record of one answer, filled in by streamChat as it arrives, so that whoever aborts the
// request still holds the text and timings received until then.
export function newAnswer() {
  return { text: '', pieces: 0, usage: null, timings: null, finishReason: null,
           startedAt: performance.now(), firstTokenAt: null, endedAt: null };
}

// Streams one completion into `answer`, calling onText(fullTextSoFar) for every piece. Rejects with an
// ApiError for a refused request or an error reported inside the stream, and with the fetch's
// AbortError when `signal` aborts it.
export async function streamChat(request, answer, { signal, onText }) {
  try {
    const response = await fetch('/v1/chat/completions', {
      method: 'POST', headers: headers(), signal,
      body: JSON.stringify({ ...request, stream: true, stream_options: { include_usage: true } }),
    });
    if (!response.ok) throw await errorOf(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // Server-sent events end with a blank line; each of ours has a single 'data:' line.
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('');
        // After [DONE] the response still has to end: reading on to its end means the next request
        // (the camera's next frame) never starts while this one is still open.
        if (data && data !== '[DONE]') receive(JSON.parse(data), answer, response.status, onText);
      }
    }
  } finally {
    answer.endedAt = performance.now();
  }
}

function receive(chunk, answer, status, onText) {
  if (chunk.error) throw new ApiError(chunk.error.message, status);
  for (const choice of chunk.choices ?? []) {
    const piece = choice.delta?.content;
    if (piece) {
      answer.firstTokenAt ??= performance.now();
      answer.text += piece;
      answer.pieces++;
      onText(answer.text);
    }
    if (choice.finish_reason) answer.finishReason = choice.finish_reason;
  }
  // The last chunk (stream_options.include_usage) carries the token counts and the server's timings.
  if (chunk.usage) answer.usage = chunk.usage;
  if (chunk.timings) answer.timings = chunk.timings;
}

// Time to first token and decoding speed as this page saw them (network included). Without the final
// usage chunk (a stopped answer) each streamed piece is counted as a token.
export function answerStats(answer) {
  const tokens = answer.usage?.completion_tokens ?? answer.pieces;
  const ttftMs = answer.firstTokenAt === null ? null : answer.firstTokenAt - answer.startedAt;
  const decodeSeconds = answer.firstTokenAt === null ? 0 : (answer.endedAt - answer.firstTokenAt) / 1000;
  const tokensPerSecond = tokens > 1 && decodeSeconds > 0 ? (tokens - 1) / decodeSeconds : null;
  return { tokens, ttftMs, tokensPerSecond };
}

export function formatStats(answer) {
  const { tokens, ttftMs, tokensPerSecond } = answerStats(answer);
  const parts = [];
  if (ttftMs !== null) parts.push(`TTFT ${Math.round(ttftMs)} ms`);
  if (tokensPerSecond !== null) parts.push(`${tokensPerSecond.toFixed(1)} tokens/s`);
  parts.push(`${tokens} token${tokens === 1 ? '' : 's'}`);
  if (answer.timings) {
    const t = answer.timings;
    if (t.image_cache_hit) parts.push('image cached');
    else if (t.vision_ms > 0) parts.push(`vision ${Math.round(t.vision_ms)} ms`);
    parts.push(`prefill ${Math.round(t.prefill_ms)} ms`);
  }
  return parts.join(' · ');
}
