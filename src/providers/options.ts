/**
 * Declarative validation of provider options (`extra`): each adapter lists the options it
 * accepts with their documented type and range; anything else is rejected with a clear
 * bad_request naming the option. Values are never clamped or forwarded unchecked.
 */
import { GatewayError } from '../protocol/errors.ts';

export type OptionSpec =
  | { kind: 'bool' }
  | { kind: 'number'; min: number; max: number; integer?: boolean }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'string'; maxLength: number }
  | { kind: 'numbers'; min: number; max: number; maxItems: number; integer?: boolean }
  /** a number in range or one of the listed strings */
  | { kind: 'number_or_enum'; min: number; max: number; values: readonly string[] };

export function describeSpec(spec: OptionSpec): string {
  switch (spec.kind) {
    case 'bool':
      return 'a boolean';
    case 'number':
      return `${spec.integer ? 'an integer' : 'a number'} from ${spec.min} to ${spec.max}`;
    case 'enum':
      return `one of ${spec.values.join(', ')}`;
    case 'string':
      return `a string of at most ${spec.maxLength} characters`;
    case 'numbers':
      return `an array of at most ${spec.maxItems} ${spec.integer ? 'integers' : 'numbers'} from ${spec.min} to ${spec.max}`;
    case 'number_or_enum':
      return `a number from ${spec.min} to ${spec.max} or one of ${spec.values.join(', ')}`;
  }
}

function inRange(v: unknown, min: number, max: number, integer?: boolean): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max && (!integer || Number.isInteger(v));
}

function valid(spec: OptionSpec, v: unknown): boolean {
  switch (spec.kind) {
    case 'bool':
      return typeof v === 'boolean';
    case 'number':
      return inRange(v, spec.min, spec.max, spec.integer);
    case 'enum':
      return typeof v === 'string' && spec.values.includes(v);
    case 'string':
      return typeof v === 'string' && v.length > 0 && v.length <= spec.maxLength;
    case 'numbers':
      return Array.isArray(v) && v.length <= spec.maxItems && v.every((x) => inRange(x, spec.min, spec.max, spec.integer));
    case 'number_or_enum':
      return inRange(v, spec.min, spec.max) || (typeof v === 'string' && spec.values.includes(v));
  }
}

/**
 * Validate `extra` against `specs`. `null` values are dropped (the protocol's way to unset).
 * `refused` names options the gateway owns, with the reason given to the client.
 */
export function validateOptions(
  label: string,
  extra: Record<string, unknown>,
  specs: Record<string, OptionSpec>,
  refused: Record<string, string> = {},
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(extra)) {
    if (v === null || v === undefined) continue;
    const why = refused[key];
    if (why !== undefined) throw new GatewayError('bad_request', `${label}: option "${key.slice(0, 60)}" is not accepted: ${why}`);
    const spec = specs[key];
    if (!spec) {
      const known = Object.keys(specs).join(', ');
      throw new GatewayError('bad_request', `${label}: unknown option "${key.slice(0, 60)}"; accepted: ${known || 'none'}`);
    }
    if (!valid(spec, v)) throw new GatewayError('bad_request', `${label}: option "${key}" must be ${describeSpec(spec)}`);
    out[key] = v;
  }
  return out;
}

/** The supported rate closest to `requested` from above (resampling down is cleaner), else the highest. */
export function pickSampleRate(requested: number, supported: readonly number[]): number {
  const sorted = [...supported].sort((a, b) => a - b);
  if (sorted.includes(requested)) return requested;
  return sorted.find((r) => r >= requested) ?? (sorted[sorted.length - 1] as number);
}
