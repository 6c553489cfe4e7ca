/**
 * `npm run usage`: table, CSV and JSON output of the ledger's report from a SQLite file chosen by
 * --db or USAGE_DB, filters, argument errors; one run as a real process (`node src/cli/usage.ts`).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SqliteLedgerStore } from '../metering/ledger-sqlite.ts';
import { rec, rowOf } from '../../test/helpers/ledger.ts';
import { main, toCsv } from './usage.ts';

let dir: string;
let db: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'usage-cli-'));
  db = join(dir, 'usage.db');
  const store = new SqliteLedgerStore(db);
  store.write([
    rowOf(rec({ sessionId: 's1', audioSeconds: 12.34, costUsd: 0.00158, meta: { roomId: 'room, "quoted"' } })),
    rowOf(rec({ sessionId: 's2', audioSeconds: 2, apiKey: 'key-b', startedAt: new Date('2025-03-02T08:00:00Z') })),
    rowOf(rec({ sessionId: 'l1', modality: 'llm', provider: 'openai', model: 'gpt-4o-mini', audioSeconds: 0, tokens: { prompt: 7, completion: 3, cached: 0, estimated: false }, costUsd: 0.00001 })),
  ]);
  await store.close();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await main(args, env, (s) => (out += s));
  return { code, out };
}

describe('usage CLI', () => {
  it('prints grouped totals as CSV', async () => {
    const { code, out } = await run(['--db', db, '--group-by', 'model', '--csv']);
    expect(code).toBe(0);
    expect(out).toBe(
      [
        'provider,model,records,open,errors,stt_audio_seconds,tts_characters,tts_audio_seconds,llm_prompt_tokens,llm_completion_tokens,llm_cached_tokens,cost_usd,unpriced_records',
        'deepgram,nova-3,2,0,0,14.34,0,0,0,0,0,0.00158,1',
        'openai,gpt-4o-mini,1,0,0,0,0,0,7,3,0,0.00001,0',
        '',
      ].join('\n'),
    );
  });

  it('lists records as a table with totals, filtered, from USAGE_DB', async () => {
    const { code, out } = await run(['--from', '2025-03-02', '--api-key', 'key-b'], { USAGE_DB: db });
    expect(code).toBe(0);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^started_at\s+ended_at\s+id\s+status\s+modality\s+api_key/);
    expect(lines[1]).toMatch(/^-+ {2}-+/);
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/^2025-03-02T08:00:00\.000Z .* s2 +closed +stt +key-b +deepgram +nova-3 .* 2 .* ok$/);
    expect(lines[3]).toBe('total: 1 records (0 open, 0 errors); STT 2 s; TTS 0 chars; LLM 0 prompt + 0 completion tokens; $0 (+1 unpriced records)');
  });

  it('quotes CSV fields with commas and quotes (RFC 4180)', async () => {
    const { out } = await run(['--db', db, '--group-by', 'room', '--csv']);
    expect(out.split('\n')).toContain('"room, ""quoted""",1,0,0,12.34,0,0,0,0,0,0.00158,0');
    expect(toCsv(['a'], [['x\ny']])).toBe('a\n"x\ny"\n');
  });

  it('prints the JSON report', async () => {
    const { out } = await run(['--db', db, '--json', '--model', 'openai/gpt-4o-mini']);
    const report = JSON.parse(out) as { totals: { records: number; llm_prompt_tokens: number }; records: { id: string }[] };
    expect(report.totals).toMatchObject({ records: 1, llm_prompt_tokens: 7 });
    expect(report.records.map((r) => r.id)).toEqual(['l1']);
  });

  it('rejects bad arguments and a missing database with a message', async () => {
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect((await run(['--db', db, '--group-by', 'user'])).code).toBe(2);
      expect((await run(['--bogus'])).code).toBe(2);
      expect((await run(['--db', join(dir, 'missing.db')])).code).toBe(1);
      const text = err.mock.calls.map((c) => String(c[0])).join('');
      expect(text).toMatch(/group_by: unknown key "user"/);
      expect(text).toMatch(/Unknown option '--bogus'/);
      expect(text).toMatch(/cannot open the usage ledger/);
    } finally {
      err.mockRestore();
    }
  });

  it('runs as `node src/cli/usage.ts`', async () => {
    const node = join(import.meta.dirname, '..', '..', 'node_modules', '.bin', 'node');
    const { stdout } = await promisify(execFile)(node, ['src/cli/usage.ts', '--group-by', 'api_key', '--csv'], {
      cwd: join(import.meta.dirname, '..', '..'),
      env: { PATH: process.env.PATH ?? '', USAGE_DB: db },
    });
    expect(stdout.split('\n').slice(1, 3)).toEqual(['key-a,2,0,0,12.34,0,0,7,3,0,0.00159,0', 'key-b,1,0,0,2,0,0,0,0,0,0,1']);
  });
});
