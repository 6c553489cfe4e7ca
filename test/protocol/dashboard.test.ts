/**
 * deploy/grafana-dashboard.json and deploy/prometheus-rules.yml query only metrics a running
 * gateway exposes on GET /metrics (a metric registered without samples yet still has its
 * `# TYPE` line), and the dashboard covers what issue 7 asks for.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/** Metric names referenced by a PromQL expression (Grafana variables allowed). */
function promqlMetricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // string literals
    .replace(/\$\{?\w+\}?/g, '') // Grafana variables ($__rate_interval, ${datasource})
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // range selectors
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1'); // grouping labels
  const names: string[] = [];
  for (const m of s.matchAll(/(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = s.slice((m.index ?? 0) + m[0].length).trimStart();
    if (after.startsWith('(')) continue; // a function call
    if (/^(by|without)\b/.test(after)) continue; // an aggregation: `sum by (...) (...)`
    if (KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

interface Dashboard {
  panels: Array<{ id: number; type: string; title: string; gridPos: { x: number; w: number }; targets?: Array<{ refId: string; expr: string }> }>;
  templating: { list: Array<{ name: string; definition?: string }> };
}

const dashboard = JSON.parse(readFileSync(new URL('../../deploy/grafana-dashboard.json', import.meta.url), 'utf8')) as Dashboard;
const rules = parseYaml(readFileSync(new URL('../../deploy/prometheus-rules.yml', import.meta.url), 'utf8')) as { groups: Array<{ rules: Array<{ expr: string }> }> };
const scrape = parseYaml(readFileSync(new URL('../../deploy/prometheus.yml', import.meta.url), 'utf8')) as {
  rule_files: string[];
  scrape_configs: Array<{ job_name: string; metrics_path: string }>;
};

function dashboardExprs(): string[] {
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  for (const v of dashboard.templating.list) {
    const m = /^label_values\(\s*([a-zA-Z_:][\w:]*)/.exec(v.definition ?? '');
    if (m) exprs.push(m[1] as string);
  }
  return exprs;
}

let gw: TestGateway;
let exposed: Map<string, string>;

beforeAll(async () => {
  gw = await startTestGateway();
  const res = await fetch(`http://127.0.0.1:${gw.port}/metrics`);
  expect(res.status).toBe(200);
  exposed = new Map();
  for (const line of (await res.text()).split('\n')) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) exposed.set(m[1] as string, m[2] as string);
  }
});

afterAll(async () => {
  await gw?.close();
});

/** The exposed metric a queried series belongs to (histogram `_bucket`/`_sum`/`_count` -> the histogram). */
function exposedAs(name: string): string | undefined {
  if (exposed.has(name)) return name;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (m && ['histogram', 'summary'].includes(exposed.get(m[1] as string) ?? '')) return m[1];
  return undefined;
}

describe('deploy/ monitoring files', () => {
  it('the PromQL name extractor finds metrics, not functions, labels, keywords or variables', () => {
    expect(
      promqlMetricNames(
        'histogram_quantile(0.95, sum by (le, provider) (rate(a_seconds_bucket{x=~"y|z"}[$__rate_interval]))) / on (job) group_left b_total offset 5m + 1e-6 * max without (i) (c)',
      ),
    ).toEqual(['a_seconds_bucket', 'b_total', 'c']);
  });

  it('every metric the dashboard and the alert rules query exists in a running gateway /metrics', () => {
    const queried = new Set([...dashboardExprs(), ...rules.groups.flatMap((g) => g.rules.map((r) => r.expr))].flatMap(promqlMetricNames));
    expect(queried.size).toBeGreaterThan(20);
    const missing = [...queried].filter((n) => exposedAs(n) === undefined);
    expect(missing, 'queried metrics not exposed on /metrics').toEqual([]);
  });

  it('covers cost by model/provider/key, audio minutes, characters, tokens, latency percentiles, errors, fallbacks, sessions', () => {
    const queried = new Set(dashboardExprs().flatMap(promqlMetricNames).map((n) => exposedAs(n)));
    for (const need of [
      'gateway_cost_usd_total',
      'gateway_stt_audio_seconds_total',
      'gateway_tts_characters_total',
      'gateway_llm_tokens_total',
      'gateway_stt_first_result_seconds',
      'gateway_tts_first_audio_seconds',
      'gateway_llm_ttft_seconds',
      'gateway_requests_total',
      'gateway_fallbacks_total',
      'gateway_provider_errors_total',
      'gateway_sessions_active',
      'gateway_budget_used_ratio',
    ]) {
      expect(queried, need).toContain(need);
    }
    const exprs = dashboardExprs().join('\n');
    for (const by of ['sum by (modality, provider, model) (rate(gateway_cost_usd_total', 'sum by (provider) (increase(gateway_cost_usd_total', 'sum by (api_key) (increase(gateway_cost_usd_total']) {
      expect(exprs).toContain(by);
    }
    for (const q of ['0.5', '0.95', '0.99']) expect(exprs).toContain(`histogram_quantile(${q}, sum by (le, provider) (rate(gateway_llm_ttft_seconds_bucket`);
  });

  it('is a well-formed dashboard: unique panel ids and refIds, panels within the 24-column grid; Prometheus scrapes /metrics', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') continue;
      const refs = (p.targets ?? []).map((t) => t.refId);
      expect(refs.length, p.title).toBeGreaterThan(0);
      expect(new Set(refs).size, p.title).toBe(refs.length);
    }
    expect(scrape.scrape_configs[0]).toMatchObject({ job_name: 'inference-gateway', metrics_path: '/metrics' });
    expect(scrape.rule_files).toEqual(['prometheus-rules.yml']);
  });
});
