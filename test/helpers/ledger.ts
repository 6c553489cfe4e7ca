/**
 * Usage ledger fixtures shared by the SQLite and PostgreSQL tests: records, and one report
 * check that both stores must pass on the same rows.
 */
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';
import { fileSchema, resolveConfig } from '../../src/config.ts';
import { createGateway } from '../../src/gateway/server.ts';
import { silentLogger } from '../../src/log.ts';
import { toLedgerRow, type Ledger, type LedgerStore } from '../../src/metering/ledger.ts';
import { parseUsageQuery, type LedgerRow, type UsageReport } from '../../src/metering/ledger-report.ts';
import { MemoryUsageSink, type UsageRecord } from '../../src/metering/usage.ts';
import { TEST_KEY, TEST_SECRET, type TestGateway } from './gateway.ts';

export const T0 = Date.parse('2025-03-01T10:00:00Z');

export function rec(o: Partial<UsageRecord> & { sessionId: string }): UsageRecord {
  return {
    modality: 'stt',
    apiKey: 'key-a',
    provider: 'deepgram',
    model: 'nova-3',
    startedAt: new Date(T0),
    endedAt: new Date(T0 + 5000),
    audioSeconds: 1,
    outcome: 'ok',
    meta: {},
    ...o,
  };
}

export const rowOf = (r: UsageRecord): LedgerRow => toLedgerRow(r, 'closed');

const DAY = 86_400_000;

/** Shared by the SQLite and PostgreSQL stores: the same rows give the same reports. */
export async function checkReports(store: LedgerStore): Promise<void> {
  await store.write([
    rowOf(rec({ sessionId: 's1', audioSeconds: 10, costUsd: 0.01, meta: { roomId: 'r1' } })),
    rowOf(rec({ sessionId: 's2', audioSeconds: 2.5, apiKey: 'key-b', costUsd: 0.002, meta: { roomId: 'r2' } })),
    rowOf(rec({ sessionId: 's3', audioSeconds: 1, provider: 'assemblyai', model: 'universal-streaming', startedAt: new Date(T0 + DAY), meta: { roomId: 'r1' } })),
    rowOf(rec({ sessionId: 't1', modality: 'tts', provider: 'cartesia', model: 'sonic-2', audioSeconds: 3, characters: 42, generations: 2, costUsd: 0.003, meta: { roomId: 'r1' } })),
    rowOf(
      rec({
        sessionId: 'l1',
        modality: 'llm',
        provider: 'openai',
        model: 'gpt-4o-mini',
        audioSeconds: 0,
        tokens: { prompt: 100, completion: 20, cached: 50, estimated: true },
        costUsd: 0.0001,
        outcome: 'provider_error',
        errorCode: 502,
        startedAt: new Date(T0 + DAY),
        meta: { roomId: 'r2' },
      }),
    ),
    { ...rowOf(rec({ sessionId: 's4', audioSeconds: 0.5, costUsd: 0.0005, meta: { roomId: 'r1' } })), status: 'open', outcome: 'open' },
  ]);
  const report = (params: Record<string, string>): Promise<UsageReport> => store.report(parseUsageQuery((n) => params[n]));

  const all = await report({});
  expect(all.totals).toEqual({
    records: 6,
    open: 1,
    errors: 1,
    stt_audio_seconds: 14,
    tts_characters: 42,
    tts_audio_seconds: 3,
    llm_prompt_tokens: 100,
    llm_completion_tokens: 20,
    llm_cached_tokens: 50,
    llm_estimated_requests: 1,
    cost_usd: expect.closeTo(0.0156, 10),
    unpriced_records: 1,
  });
  expect(all.records?.map((r) => r.id)).toEqual(['l1', 's3', 's1', 's2', 's4', 't1']);
  expect(all.records?.find((r) => r.id === 'l1')).toMatchObject({
    tokens_estimated: true,
    prompt_tokens: 100,
    error_code: 502,
    started_at: new Date(T0 + DAY).toISOString(),
    room_id: 'r2',
  });

  const limited = await report({ limit: '2' });
  expect(limited.records).toHaveLength(2);
  expect(limited.truncated).toBe(true);

  expect((await report({ api_key: 'key-b' })).records?.map((r) => r.id)).toEqual(['s2']);
  expect((await report({ room: 'r1', from: new Date(T0).toISOString(), to: new Date(T0 + DAY).toISOString() })).records?.map((r) => r.id).sort()).toEqual([
    's1',
    's4',
    't1',
  ]);
  expect((await report({ model: 'assemblyai/universal-streaming' })).records?.map((r) => r.id)).toEqual(['s3']);
  expect((await report({ model: 'nova-3' })).totals.records).toBe(3);

  const byModel = await report({ group_by: 'model' });
  expect(byModel.groups?.map((g) => [g.key.provider, g.key.model, g.records])).toEqual([
    ['assemblyai', 'universal-streaming', 1],
    ['cartesia', 'sonic-2', 1],
    ['deepgram', 'nova-3', 3],
    ['openai', 'gpt-4o-mini', 1],
  ]);
  expect(byModel.groups?.find((g) => g.key.model === 'nova-3')?.stt_audio_seconds).toBe(13);
  expect(byModel.records).toBeUndefined();

  const byDayRoom = await report({ group_by: 'day,room' });
  expect(byDayRoom.groups?.map((g) => [g.key.day, g.key.room, g.records])).toEqual([
    ['2025-03-01', 'r1', 3],
    ['2025-03-01', 'r2', 1],
    ['2025-03-02', 'r1', 1],
    ['2025-03-02', 'r2', 1],
  ]);
  const byKey = await report({ group_by: 'api_key,modality' });
  expect(byKey.groups?.map((g) => [g.key.api_key, g.key.modality, g.records])).toEqual([
    ['key-a', 'llm', 1],
    ['key-a', 'stt', 3],
    ['key-a', 'tts', 1],
    ['key-b', 'stt', 1],
  ]);
  const byProvider = await report({ group_by: 'provider', from: new Date(T0 + DAY).toISOString() });
  expect(byProvider.groups?.map((g) => [g.key.provider, g.cost_usd, g.unpriced_records])).toEqual([
    ['assemblyai', 0, 1],
    ['openai', 0.0001, 0],
  ]);
}


/** A real gateway on port 0 whose usage goes to `ledger` (GET /v1/usage reads it). */
export async function startLedgerGateway(
  ledger: Ledger,
  opts: { env?: Record<string, string>; file?: unknown } = {},
): Promise<TestGateway> {
  const env = { LIVEKIT_API_KEY: TEST_KEY, LIVEKIT_API_SECRET: TEST_SECRET, ...opts.env };
  const cfg = resolveConfig(fileSchema.parse(opts.file ?? {}), env);
  const gateway = createGateway(cfg, { log: silentLogger, usage: ledger, ledger });
  const addr: AddressInfo = await gateway.listen(0, '127.0.0.1');
  return {
    gateway,
    cfg,
    // Not used: records go to the ledger.
    usage: new MemoryUsageSink(),
    port: addr.port,
    baseUrl: `http://127.0.0.1:${addr.port}/v1`,
    wsUrl: (path) => `ws://127.0.0.1:${addr.port}${path}`,
    metricsText: () => gateway.metrics.registry.metrics(),
    close: () => gateway.shutdown(),
  };
}
