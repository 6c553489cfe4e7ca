/** Audio encodings and byte <-> time math. Only pcm_s16le exists in the LiveKit protocol. */

export const SUPPORTED_ENCODINGS = ['pcm_s16le'] as const;
export type AudioEncoding = (typeof SUPPORTED_ENCODINGS)[number];

export const MIN_SAMPLE_RATE = 8000;
export const MAX_SAMPLE_RATE = 48000;
const BYTES_PER_SAMPLE = 2;

export function bytesPerSecond(sampleRate: number, channels = 1): number {
  return sampleRate * BYTES_PER_SAMPLE * channels;
}

export function bytesToSeconds(bytes: number, sampleRate: number, channels = 1): number {
  return bytes / bytesPerSecond(sampleRate, channels);
}

export function secondsToBytes(seconds: number, sampleRate: number, channels = 1): number {
  const raw = Math.round(seconds * bytesPerSecond(sampleRate, channels));
  return raw - (raw % (BYTES_PER_SAMPLE * channels));
}

/**
 * Strict base64 decode. Node's decoder silently skips invalid characters, so a decoded length
 * that differs from the length implied by the input means the input was not valid base64.
 * Returns null when invalid. Cost: one decode plus integer math (no regex over the payload).
 */
export function decodeBase64Strict(s: string): Buffer | null {
  const n = s.length;
  if (n === 0) return Buffer.alloc(0);
  if (n % 4 !== 0) return null;
  let pad = 0;
  if (s.charCodeAt(n - 1) === 61 /* = */) pad = s.charCodeAt(n - 2) === 61 ? 2 : 1;
  const buf = Buffer.from(s, 'base64');
  return buf.length === (n / 4) * 3 - pad ? buf : null;
}

/** Parse the sample rate the protocol sends as a string ("16000") or number. */
export function parseSampleRate(v: unknown): number | null {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{4,5}$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < MIN_SAMPLE_RATE || n > MAX_SAMPLE_RATE) return null;
  return n;
}
