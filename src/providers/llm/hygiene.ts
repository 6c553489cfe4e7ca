/**
 * Request hygiene for OpenAI-compatible vendors (shared/protocol.md 4.1): the client's body is
 * forwarded with the fewest changes that keep vendors from rejecting it.
 * - `model` becomes the vendor's own id;
 * - an empty `tools` array is dropped, and with no tools `tool_choice`/`parallel_tool_calls` too;
 * - parameters a model family rejects are dropped (vendor `paramRules`);
 * - the non-standard `extra_content` on messages and tool calls is translated for Gemini
 *   (`extra_content.google.thought_signature`) and stripped for every other vendor;
 * - streaming asks the vendor for a usage chunk (`stream_options.include_usage`).
 * The client's JWT never reaches a vendor: headers are built from scratch by the caller.
 */
import type { OpenAiCompatibleVendor } from '../types.ts';

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Gemini's OpenAI-compatible API reads `extra_content.google.thought_signature`. */
function googleExtra(extra: unknown): Json | undefined {
  if (!isObject(extra) || !isObject(extra.google)) return undefined;
  const sig = extra.google.thought_signature ?? extra.google.thoughtSignature;
  return typeof sig === 'string' && sig ? { google: { thought_signature: sig } } : undefined;
}

function withExtra(o: Json, mode: OpenAiCompatibleVendor['extraContent']): Json {
  if (!('extra_content' in o)) return o;
  const { extra_content: extra, ...rest } = o;
  if (mode === 'google') {
    const g = googleExtra(extra);
    if (g) return { ...rest, extra_content: g };
  }
  return rest;
}

function cleanMessage(m: unknown, mode: OpenAiCompatibleVendor['extraContent']): unknown {
  if (!isObject(m)) return m;
  let out = withExtra(m, mode);
  if (Array.isArray(out.tool_calls)) {
    const calls = out.tool_calls.map((c) => (isObject(c) ? withExtra(c, mode) : c));
    out = { ...out, tool_calls: calls };
  }
  return out;
}

export interface PreparedBody {
  body: Json;
  /** The client asked for the usage chunk itself (else the gateway keeps it for metering only). */
  clientWantsUsage: boolean;
}

export function prepareOpenAiBody(src: Json, vendor: Pick<OpenAiCompatibleVendor, 'extraContent' | 'paramRules'>, model: string): PreparedBody {
  const body: Json = { ...src, model };
  const stream = body.stream === true;
  if (Array.isArray(body.tools) && body.tools.length === 0) delete body.tools;
  const hasTools = Array.isArray(body.tools);
  if (!hasTools) {
    delete body.tool_choice;
    delete body.parallel_tool_calls;
  }
  for (const rule of vendor.paramRules ?? []) {
    if (!rule.model.test(model) || (rule.withTools && !hasTools)) continue;
    for (const k of rule.drop) delete body[k];
  }
  if (Array.isArray(body.messages)) {
    body.messages = body.messages.map((m) => cleanMessage(m, vendor.extraContent));
  }
  const opts = isObject(body.stream_options) ? body.stream_options : undefined;
  const clientWantsUsage = opts?.include_usage === true;
  if (stream) body.stream_options = { ...opts, include_usage: true };
  else delete body.stream_options;
  return { body, clientWantsUsage };
}
