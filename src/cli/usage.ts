/**
 * `npm run usage -- [options]`: the usage ledger's report as a table or CSV, read from the
 * database the gateway is configured with (GATEWAY_CONFIG's `ledger`, USAGE_DB,
 * USAGE_DATABASE_URL). Same filters as GET /v1/usage (docs/metering.md "CLI").
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type LedgerTarget } from '../config.ts';
import { openLedgerStore } from '../metering/ledger.ts';
import { UsageQueryError, parseUsageQuery, type UsageReport } from '../metering/ledger-report.ts';

const HELP = `usage: npm run usage -- [options]

  --from <time>        records started at or after (ISO 8601 date/time or epoch)
  --to <time>          records started before
  --api-key <key>      one LiveKit API key
  --room <id>          one X-LiveKit-Room-Id
  --model <model>      model or provider/model
  --group-by <keys>    comma-separated: model, provider, api_key, room, day, modality
  --limit <n>          most records listed without --group-by (default 1000)
  --csv                CSV instead of a table
  --json               the JSON of GET /v1/usage
  --db <path>          SQLite file (default: USAGE_DB or ./data/usage.db)
  --database-url <url> PostgreSQL (default: USAGE_DATABASE_URL)
`;

const TOTAL_COLUMNS = [
  'records',
  'open',
  'errors',
  'stt_audio_seconds',
  'tts_characters',
  'tts_audio_seconds',
  'llm_prompt_tokens',
  'llm_completion_tokens',
  'llm_cached_tokens',
  'cost_usd',
  'unpriced_records',
] as const;

const RECORD_COLUMNS = [
  'started_at',
  'ended_at',
  'id',
  'status',
  'modality',
  'api_key',
  'provider',
  'model',
  'room_id',
  'job_id',
  'agent_id',
  'client_session_id',
  'audio_seconds',
  'characters',
  'prompt_tokens',
  'completion_tokens',
  'cached_tokens',
  'tokens_estimated',
  'cost_usd',
  'outcome',
  'error_code',
] as const;

type Cell = string | number | boolean | null | undefined;

/** Header + rows of the report: groups (with their keys) or records. */
export function reportRows(report: UsageReport): { header: string[]; rows: Cell[][] } {
  if (report.groups) {
    const keys = report.groups[0] ? Object.keys(report.groups[0].key) : report.group_by;
    return {
      header: [...keys, ...TOTAL_COLUMNS],
      rows: report.groups.map((g) => [...keys.map((k) => g.key[k]), ...TOTAL_COLUMNS.map((c) => g[c])]),
    };
  }
  return {
    header: [...RECORD_COLUMNS],
    rows: (report.records ?? []).map((r) => RECORD_COLUMNS.map((c) => r[c])),
  };
}

function fmt(v: Cell): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(Math.round(v * 1e6) / 1e6);
  return String(v);
}

/** RFC 4180: quote fields with a comma, quote or line break. */
export function toCsv(header: string[], rows: Cell[][]): string {
  const field = (s: string): string => (/[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  return [header, ...rows.map((r) => r.map(fmt))].map((r) => r.map(field).join(',')).join('\n') + '\n';
}

export function toTable(header: string[], rows: Cell[][]): string {
  const cells = [header, ...rows.map((r) => r.map(fmt))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n') + '\n';
}

function totalsLine(report: UsageReport): string {
  const t = report.totals;
  return (
    `total: ${t.records} records (${t.open} open, ${t.errors} errors); STT ${fmt(t.stt_audio_seconds)} s; ` +
    `TTS ${t.tts_characters} chars; LLM ${t.llm_prompt_tokens} prompt + ${t.llm_completion_tokens} completion tokens; ` +
    `$${fmt(t.cost_usd)}${t.unpriced_records > 0 ? ` (+${t.unpriced_records} unpriced records)` : ''}` +
    (report.truncated ? '; list truncated: use --limit or filters' : '') +
    '\n'
  );
}

export async function main(argv: string[], env: NodeJS.ProcessEnv, out: (s: string) => void): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        'api-key': { type: 'string' },
        room: { type: 'string' },
        model: { type: 'string' },
        'group-by': { type: 'string' },
        limit: { type: 'string' },
        csv: { type: 'boolean' },
        json: { type: 'boolean' },
        db: { type: 'string' },
        'database-url': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (args.help) {
    out(HELP);
    return 0;
  }
  let target: LedgerTarget;
  if (args.db) target = { kind: 'sqlite', path: args.db };
  else if (args['database-url']) target = { kind: 'postgres', url: args['database-url'] };
  else {
    try {
      target = loadConfig(env).ledger;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`configuration error:\n${err.message}\n`);
      return 2;
    }
  }
  if (target.kind === 'none') {
    process.stderr.write('the usage ledger is disabled (ledger.backend: none)\n');
    return 2;
  }
  const names: Record<string, string | undefined> = {
    from: args.from,
    to: args.to,
    api_key: args['api-key'],
    room: args.room,
    model: args.model,
    group_by: args['group-by'],
    limit: args.limit,
  };
  let q;
  try {
    q = parseUsageQuery((n) => names[n]);
  } catch (err) {
    if (!(err instanceof UsageQueryError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  let store;
  try {
    store = await openLedgerStore(target, { readOnly: true });
  } catch (err) {
    process.stderr.write(`cannot open the usage ledger (${target.kind === 'sqlite' ? target.path : 'postgres'}): ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const report = await store.report(q);
    if (args.json) out(`${JSON.stringify(report, null, 2)}\n`);
    else {
      const { header, rows } = reportRows(report);
      if (args.csv) out(toCsv(header, rows));
      else out(toTable(header, rows) + totalsLine(report));
    }
    return 0;
  } finally {
    await store.close();
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2), process.env, (s) => process.stdout.write(s));
}
