/**
 * The usage ledger's schema and reporting, shared by the SQLite and PostgreSQL stores: the row
 * shape, report filters (GET /v1/usage, `npm run usage`), and the SQL both dialects run.
 */

/** One ledger row: a session (STT/TTS) or request (LLM). Times are epoch milliseconds. */
export interface LedgerRow {
  id: string;
  /** `open`: a checkpoint of a live session; `closed`: the final record. */
  status: 'open' | 'closed';
  modality: string;
  api_key: string;
  provider: string;
  model: string;
  /** JSON array of `provider/model` tried, or null. */
  fallback_chain: string | null;
  started_at: number;
  ended_at: number;
  room_id: string | null;
  job_id: string | null;
  agent_id: string | null;
  client_session_id: string | null;
  audio_seconds: number;
  characters: number | null;
  generations: number | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  cached_tokens: number | null;
  tokens_estimated: boolean | null;
  cost_usd: number | null;
  outcome: string;
  error_code: number | null;
  detail: string | null;
}

/** Column order of inserts (both dialects). */
export const LEDGER_COLUMNS = [
  'id',
  'status',
  'modality',
  'api_key',
  'provider',
  'model',
  'fallback_chain',
  'started_at',
  'ended_at',
  'room_id',
  'job_id',
  'agent_id',
  'client_session_id',
  'audio_seconds',
  'characters',
  'generations',
  'prompt_tokens',
  'completion_tokens',
  'cached_tokens',
  'tokens_estimated',
  'cost_usd',
  'outcome',
  'error_code',
  'detail',
] as const satisfies readonly (keyof LedgerRow)[];

export const LEDGER_TABLE = 'usage_records';

export const GROUP_KEYS = ['model', 'provider', 'api_key', 'room', 'day', 'modality'] as const;
export type GroupKey = (typeof GROUP_KEYS)[number];

export interface UsageQuery {
  /** Inclusive, epoch ms, on `started_at`. */
  from?: number;
  /** Exclusive, epoch ms, on `started_at`. */
  to?: number;
  apiKey?: string;
  room?: string;
  /** `model` or `provider/model`. */
  model?: string;
  groupBy: GroupKey[];
  /** Most rows listed when not grouping. */
  limit: number;
}

export interface UsageTotals {
  records: number;
  open: number;
  errors: number;
  stt_audio_seconds: number;
  tts_characters: number;
  tts_audio_seconds: number;
  llm_prompt_tokens: number;
  llm_completion_tokens: number;
  llm_cached_tokens: number;
  llm_estimated_requests: number;
  cost_usd: number;
  /** Records without a price (cost_usd null): their cost is not in `cost_usd`. */
  unpriced_records: number;
}

export interface UsageGroup extends UsageTotals {
  key: Record<string, string | null>;
}

export interface UsageRecordOut {
  id: string;
  status: string;
  modality: string;
  api_key: string;
  provider: string;
  model: string;
  fallback_chain: string[] | null;
  started_at: string;
  ended_at: string;
  room_id: string | null;
  job_id: string | null;
  agent_id: string | null;
  client_session_id: string | null;
  audio_seconds: number;
  characters: number | null;
  generations: number | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  cached_tokens: number | null;
  tokens_estimated: boolean | null;
  cost_usd: number | null;
  outcome: string;
  error_code: number | null;
  detail: string | null;
}

export interface UsageReport {
  filters: { from: string | null; to: string | null; api_key: string | null; room: string | null; model: string | null };
  group_by: GroupKey[];
  totals: UsageTotals;
  /** With group_by. Ordered by the group keys. */
  groups?: UsageGroup[];
  /** Without group_by: newest first, at most `limit`. */
  records?: UsageRecordOut[];
  truncated?: boolean;
}

export class UsageQueryError extends Error {}

const MAX_LIMIT = 10_000;

function parseTime(name: string, raw: string): number {
  const v = raw.trim();
  const t = /^\d{10,13}$/.test(v) ? Number(v.length === 10 ? Number(v) * 1000 : v) : Date.parse(v);
  if (!Number.isFinite(t)) throw new UsageQueryError(`${name}: not an ISO 8601 date/time or epoch (got "${v.slice(0, 40)}")`);
  return t;
}

/** Filters from query-string style parameters (`from`, `to`, `api_key`, `room`, `model`, `group_by`, `limit`). */
export function parseUsageQuery(get: (name: string) => string | null | undefined): UsageQuery {
  const q: UsageQuery = { groupBy: [], limit: 1000 };
  const from = get('from');
  if (from) q.from = parseTime('from', from);
  const to = get('to');
  if (to) q.to = parseTime('to', to);
  if (q.from !== undefined && q.to !== undefined && q.to <= q.from) throw new UsageQueryError('to must be after from');
  const apiKey = get('api_key');
  if (apiKey) q.apiKey = apiKey.slice(0, 256);
  const room = get('room');
  if (room) q.room = room.slice(0, 256);
  const model = get('model');
  if (model) q.model = model.slice(0, 200);
  const groupBy = get('group_by');
  if (groupBy) {
    for (const g of groupBy.split(',').map((s) => s.trim()).filter(Boolean)) {
      if (!(GROUP_KEYS as readonly string[]).includes(g)) throw new UsageQueryError(`group_by: unknown key "${g.slice(0, 40)}"; one or more of ${GROUP_KEYS.join(', ')}`);
      if (!q.groupBy.includes(g as GroupKey)) q.groupBy.push(g as GroupKey);
    }
  }
  const limit = get('limit');
  if (limit) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) throw new UsageQueryError(`limit: an integer from 1 to ${MAX_LIMIT}`);
    q.limit = n;
  }
  return q;
}

/** The few places the two SQL dialects differ. */
export interface Dialect {
  /** Placeholder for the i-th parameter (1-based). */
  param(i: number): string;
  /** Expression for the UTC day (YYYY-MM-DD) of `started_at`. */
  day: string;
  /** A timestamp parameter value from epoch ms. */
  time(ms: number): unknown;
}

interface BuiltQuery {
  sql: string;
  params: unknown[];
}

const AGGREGATES = `COUNT(*) AS records,
  SUM(CASE WHEN status = 'open' THEN 1 ELSE 0 END) AS open,
  SUM(CASE WHEN error_code IS NOT NULL THEN 1 ELSE 0 END) AS errors,
  SUM(CASE WHEN modality = 'stt' THEN audio_seconds ELSE 0 END) AS stt_audio_seconds,
  SUM(CASE WHEN modality = 'tts' THEN COALESCE(characters, 0) ELSE 0 END) AS tts_characters,
  SUM(CASE WHEN modality = 'tts' THEN audio_seconds ELSE 0 END) AS tts_audio_seconds,
  SUM(COALESCE(prompt_tokens, 0)) AS llm_prompt_tokens,
  SUM(COALESCE(completion_tokens, 0)) AS llm_completion_tokens,
  SUM(COALESCE(cached_tokens, 0)) AS llm_cached_tokens,
  SUM(CASE WHEN tokens_estimated THEN 1 ELSE 0 END) AS llm_estimated_requests,
  SUM(COALESCE(cost_usd, 0)) AS cost_usd,
  SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_records`;

function groupColumns(g: GroupKey, d: Dialect): [string, string][] {
  switch (g) {
    case 'model':
      return [
        ['provider', 'provider'],
        ['model', 'model'],
      ];
    case 'provider':
      return [['provider', 'provider']];
    case 'api_key':
      return [['api_key', 'api_key']];
    case 'room':
      return [['room_id', 'room']];
    case 'day':
      return [[d.day, 'day']];
    case 'modality':
      return [['modality', 'modality']];
  }
}

function where(q: UsageQuery, d: Dialect): { clause: string; params: unknown[] } {
  const conds: string[] = [];
  const params: unknown[] = [];
  const add = (sql: (p: string) => string, v: unknown): void => {
    params.push(v);
    conds.push(sql(d.param(params.length)));
  };
  if (q.from !== undefined) add((p) => `started_at >= ${p}`, d.time(q.from));
  if (q.to !== undefined) add((p) => `started_at < ${p}`, d.time(q.to));
  if (q.apiKey !== undefined) add((p) => `api_key = ${p}`, q.apiKey);
  if (q.room !== undefined) add((p) => `room_id = ${p}`, q.room);
  if (q.model !== undefined) {
    const slash = q.model.indexOf('/');
    if (slash > 0) {
      add((p) => `provider = ${p}`, q.model.slice(0, slash));
      add((p) => `model = ${p}`, q.model.slice(slash + 1));
    } else add((p) => `model = ${p}`, q.model);
  }
  return { clause: conds.length ? `WHERE ${conds.join(' AND ')}` : '', params };
}

export function totalsQuery(q: UsageQuery, d: Dialect): BuiltQuery {
  const w = where(q, d);
  return { sql: `SELECT ${AGGREGATES} FROM ${LEDGER_TABLE} ${w.clause}`, params: w.params };
}

export function groupsQuery(q: UsageQuery, d: Dialect): BuiltQuery & { keys: string[] } {
  const w = where(q, d);
  const cols = q.groupBy.flatMap((g) => groupColumns(g, d));
  const select = cols.map(([expr, alias]) => `${expr} AS ${alias}`).join(', ');
  const by = cols.map(([expr]) => expr).join(', ');
  return {
    sql: `SELECT ${select}, ${AGGREGATES} FROM ${LEDGER_TABLE} ${w.clause} GROUP BY ${by} ORDER BY ${by}`,
    params: w.params,
    keys: cols.map(([, alias]) => alias),
  };
}

export function recordsQuery(q: UsageQuery, d: Dialect): BuiltQuery {
  const w = where(q, d);
  // One more than the limit tells whether the list was cut.
  return {
    sql: `SELECT ${LEDGER_COLUMNS.join(', ')} FROM ${LEDGER_TABLE} ${w.clause} ORDER BY started_at DESC, id LIMIT ${q.limit + 1}`,
    params: w.params,
  };
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const toMs = (v: unknown): number => (v instanceof Date ? v.getTime() : Number(v));

export function toTotals(r: Record<string, unknown>): UsageTotals {
  return {
    records: num(r.records),
    open: num(r.open),
    errors: num(r.errors),
    stt_audio_seconds: num(r.stt_audio_seconds),
    tts_characters: num(r.tts_characters),
    tts_audio_seconds: num(r.tts_audio_seconds),
    llm_prompt_tokens: num(r.llm_prompt_tokens),
    llm_completion_tokens: num(r.llm_completion_tokens),
    llm_cached_tokens: num(r.llm_cached_tokens),
    llm_estimated_requests: num(r.llm_estimated_requests),
    cost_usd: num(r.cost_usd),
    unpriced_records: num(r.unpriced_records),
  };
}

export function toGroup(r: Record<string, unknown>, keys: string[]): UsageGroup {
  const key: Record<string, string | null> = {};
  for (const k of keys) key[k] = strOrNull(r[k]);
  return { key, ...toTotals(r) };
}

export function toRecordOut(r: Record<string, unknown>): UsageRecordOut {
  const est = r.tokens_estimated;
  return {
    id: String(r.id),
    status: String(r.status),
    modality: String(r.modality),
    api_key: String(r.api_key),
    provider: String(r.provider),
    model: String(r.model),
    fallback_chain: typeof r.fallback_chain === 'string' ? (JSON.parse(r.fallback_chain) as string[]) : null,
    started_at: new Date(toMs(r.started_at)).toISOString(),
    ended_at: new Date(toMs(r.ended_at)).toISOString(),
    room_id: strOrNull(r.room_id),
    job_id: strOrNull(r.job_id),
    agent_id: strOrNull(r.agent_id),
    client_session_id: strOrNull(r.client_session_id),
    audio_seconds: num(r.audio_seconds),
    characters: numOrNull(r.characters),
    generations: numOrNull(r.generations),
    prompt_tokens: numOrNull(r.prompt_tokens),
    completion_tokens: numOrNull(r.completion_tokens),
    cached_tokens: numOrNull(r.cached_tokens),
    tokens_estimated: est === null || est === undefined ? null : Boolean(Number(est)),
    cost_usd: numOrNull(r.cost_usd),
    outcome: String(r.outcome),
    error_code: numOrNull(r.error_code),
    detail: strOrNull(r.detail),
  };
}

/** Assemble the answer from the rows a store fetched. */
export function buildReport(
  q: UsageQuery,
  totals: Record<string, unknown>,
  groups: { rows: Record<string, unknown>[]; keys: string[] } | null,
  records: Record<string, unknown>[] | null,
): UsageReport {
  const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());
  const report: UsageReport = {
    filters: { from: iso(q.from), to: iso(q.to), api_key: q.apiKey ?? null, room: q.room ?? null, model: q.model ?? null },
    group_by: q.groupBy,
    totals: toTotals(totals),
  };
  if (groups) report.groups = groups.rows.map((r) => toGroup(r, groups.keys));
  if (records) {
    report.truncated = records.length > q.limit;
    report.records = records.slice(0, q.limit).map(toRecordOut);
  }
  return report;
}
