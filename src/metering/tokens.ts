/**
 * Token estimates for vendors that report no usage: `gpt-tokenizer` (o200k_base, the encoding
 * of current OpenAI models; a close estimate for other families, whose tokenizers are not
 * published). Loaded lazily: only requests without provider usage pay for it. Figures from here
 * are always marked `estimated` in metrics and usage records.
 */
type CountTokens = (text: string) => number;

let counter: Promise<CountTokens> | null = null;

function load(): Promise<CountTokens> {
  counter ??= import('gpt-tokenizer/encoding/o200k_base').then((m) => m.countTokens as CountTokens);
  return counter;
}

/** Per-message overhead of the chat format (OpenAI's documented 3 + 3 for the reply priming). */
const PER_MESSAGE = 3;
const REPLY_PRIMING = 3;

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((p) => (typeof p === 'object' && p !== null && typeof (p as { text?: unknown }).text === 'string' ? (p as { text: string }).text : ''))
      .join('');
  }
  return '';
}

export async function estimatePromptTokens(body: Record<string, unknown>): Promise<number> {
  const count = await load();
  let n = REPLY_PRIMING;
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (const m of messages) {
    if (typeof m !== 'object' || m === null) continue;
    const msg = m as { role?: unknown; content?: unknown; tool_calls?: unknown };
    n += PER_MESSAGE + count(`${typeof msg.role === 'string' ? msg.role : ''}${textOf(msg.content)}`);
    if (Array.isArray(msg.tool_calls)) n += count(JSON.stringify(msg.tool_calls));
  }
  if (Array.isArray(body.tools) && body.tools.length > 0) n += count(JSON.stringify(body.tools));
  return n;
}

export async function estimateTokens(text: string): Promise<number> {
  if (!text) return 0;
  return (await load())(text);
}
