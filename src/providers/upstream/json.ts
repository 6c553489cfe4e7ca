/** Provider text frames as JSON objects: the one parse every decoder shares. */

/**
 * A text frame parsed as a JSON object, or null when it is binary, not JSON, or JSON that is not
 * an object (`null`, a number, an array): a decoder never touches fields of such a value.
 */
export function parseJsonObject<T extends object>(data: Buffer, isBinary: boolean): T | null {
  if (isBinary) return null;
  let v: unknown;
  try {
    v = JSON.parse(data.toString('utf8'));
  } catch {
    return null;
  }
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as T) : null;
}
