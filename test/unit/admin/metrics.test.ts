import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  createMetrics, HANDSHAKE_PLACES, METRICS, STREAM_RESULTS, streamResultOf, type ByteCountingSession, type Component,
} from '../../../src/metrics/index.js';
import { Session } from '../../../src/mux/index.js';
import { OpenResult, REASON_TABLES } from '../../../src/protocol/reasons.js';
import { memoryTransportPair } from '../../helpers/mux.js';
import { parsePromText, typesOf, valueOf } from './prom-text.js';

async function scrape(metrics: ReturnType<typeof createMetrics>) {
  const text = await metrics.text();
  return { text, samples: parsePromText(text) };
}

/** A session as countBytes sees it: stats that grow, and a close event. */
class FakeSession extends EventEmitter implements ByteCountingSession {
  readonly stats = { bytesIn: 0, bytesOut: 0 };
  closed = false;
  close(): void {
    this.closed = true;
    this.emit('close');
  }
}

describe('metric definitions', () => {
  it('stream results are the OPEN_RESULT names in lower case, plus unknown', () => {
    const names = Object.values(REASON_TABLES.openResult).map((r) => r.name.toLowerCase());
    expect([...STREAM_RESULTS].sort()).toEqual(['ok', ...names, 'unknown'].sort());
    expect(streamResultOf(OpenResult.POLICY_DENIED)).toBe('policy_denied');
    expect(streamResultOf(OpenResult.OK)).toBe('ok');
    expect(streamResultOf(250)).toBe('unknown');
  });

  it.each<[Component, string[], string[]]>([
    ['relay', ['postern_tunnels_up', 'postern_agent_sessions', 'postern_policy_reloads_total'], ['postern_reconnects_total']],
    ['connector', ['postern_tunnels_up', 'postern_reconnects_total'], ['postern_agent_sessions', 'postern_policy_reloads_total']],
    ['agent', ['postern_streams_total', 'postern_reconnects_total'], ['postern_tunnels_up', 'postern_agent_sessions']],
  ])('a %s exports its metrics and not the others', async (component, present, absent) => {
    const { text } = await scrape(createMetrics(component));
    const types = typesOf(text);
    for (const def of Object.values(METRICS)) {
      if ((def.components as readonly string[]).includes(component)) expect(types.get(def.name), def.name).toBe(def.type);
      else expect(types.has(def.name), def.name).toBe(false);
    }
    for (const name of present) expect(types.has(name)).toBe(true);
    for (const name of absent) expect(types.has(name)).toBe(false);
  });

  it('closed label lists read 0 before any event; no default Node metrics unless asked', async () => {
    const { samples } = await scrape(createMetrics('relay'));
    for (const result of STREAM_RESULTS) expect(valueOf(samples, 'postern_streams_total', { result })).toBe(0);
    expect(valueOf(samples, 'postern_limits_hit_total', { limit: 'maxSessions' })).toBe(0);
    // A limit another process enforces has no series here.
    expect(valueOf(samples, 'postern_limits_hit_total', { limit: 'maxConcurrentHandshakes' })).toBeUndefined();

    expect(valueOf(samples, 'postern_stream_bytes_total', { direction: 'up' })).toBe(0);
    expect(valueOf(samples, 'postern_policy_reloads_total', { result: 'rejected' })).toBe(0);
    expect(samples.some((s) => s.name.startsWith('process_') || s.name.startsWith('nodejs_'))).toBe(false);

    const withDefaults = await scrape(createMetrics('connector', { defaultMetrics: true }));
    expect(valueOf(withDefaults.samples, 'process_cpu_user_seconds_total')).toBeGreaterThanOrEqual(0);
    expect(withDefaults.samples.some((s) => s.name.startsWith('nodejs_'))).toBe(true);
  });

  it('two registries in one process count apart', async () => {
    const a = createMetrics('relay');
    const b = createMetrics('relay');
    a.startOpen()('ok');
    expect(valueOf((await scrape(a)).samples, 'postern_streams_total', { result: 'ok' })).toBe(1);
    expect(valueOf((await scrape(b)).samples, 'postern_streams_total', { result: 'ok' })).toBe(0);
  });
});

describe('counting', () => {
  it('an open counts once under its result; only successful opens feed the latency histogram', async () => {
    const metrics = createMetrics('relay');
    const ok = metrics.startOpen();
    ok('ok');
    ok(OpenResult.POLICY_DENIED);
    metrics.startOpen()(OpenResult.CONNECTOR_OFFLINE);
    metrics.startOpen()(999);
    metrics.startOpen()('cancelled');
    const { samples } = await scrape(metrics);
    expect(valueOf(samples, 'postern_streams_total', { result: 'ok' })).toBe(1);
    expect(valueOf(samples, 'postern_streams_total', { result: 'policy_denied' })).toBe(0);
    expect(valueOf(samples, 'postern_streams_total', { result: 'connector_offline' })).toBe(1);
    expect(valueOf(samples, 'postern_streams_total', { result: 'unknown' })).toBe(1);
    expect(valueOf(samples, 'postern_streams_total', { result: 'cancelled' })).toBe(1);
    expect(valueOf(samples, 'postern_open_duration_seconds_count')).toBe(1);
    expect(valueOf(samples, 'postern_open_duration_seconds_bucket', { le: '+Inf' })).toBe(1);
  });

  it('streams_open follows tracked streams until they settle, also when they fail', async () => {
    const metrics = createMetrics('connector');
    let finish!: () => void;
    let fail!: (err: Error) => void;
    const a = metrics.trackStream(new Promise<void>((r) => { finish = r; }));
    const b = metrics.trackStream(new Promise<void>((_, reject) => { fail = reject; }));
    expect(valueOf((await scrape(metrics)).samples, 'postern_streams_open')).toBe(2);
    finish();
    await a;
    fail(new Error('reset'));
    await expect(b).rejects.toThrow('reset');
    expect(valueOf((await scrape(metrics)).samples, 'postern_streams_open')).toBe(0);
  });

  it('stream bytes are read from live sessions at each scrape and kept after they close', async () => {
    const metrics = createMetrics('relay');
    const agent = new FakeSession();
    const other = new FakeSession();
    metrics.countBytes(agent, 'up');
    metrics.countBytes(other, 'down');
    agent.stats.bytesIn = 1000;
    agent.stats.bytesOut = 50;
    other.stats.bytesIn = 7;
    let { samples } = await scrape(metrics);
    expect(valueOf(samples, 'postern_stream_bytes_total', { direction: 'up' })).toBe(1000);
    expect(valueOf(samples, 'postern_stream_bytes_total', { direction: 'down' })).toBe(57);

    agent.stats.bytesIn = 1500;
    agent.close();
    other.stats.bytesOut = 3;
    ({ samples } = await scrape(metrics));
    expect(valueOf(samples, 'postern_stream_bytes_total', { direction: 'up' })).toBe(1503);
    expect(valueOf(samples, 'postern_stream_bytes_total', { direction: 'down' })).toBe(57);
    expect(agent.listenerCount('close')).toBe(0);

    // A session already closed when it is counted adds its bytes once and is not held.
    const late = new FakeSession();
    late.stats.bytesIn = 10;
    late.closed = true;
    metrics.countBytes(late, 'up');
    ({ samples } = await scrape(metrics));
    expect(valueOf(samples, 'postern_stream_bytes_total', { direction: 'up' })).toBe(1513);
    expect(late.listenerCount('close')).toBe(0);
  });

  it('label values stay in their closed lists whatever callers pass', async () => {
    const metrics = createMetrics('relay');
    metrics.handshakeFailure('outer', 'POSTERN_ERR_TLS_CERT_REVOKED');
    metrics.handshakeFailure('outer', 'ECONNRESET');
    metrics.handshakeFailure('somewhere' as never, 'spiffe://hospital.example/org/x/user/mallory');
    metrics.limitHit('maxConcurrentHandshakes');
    metrics.limitHit('a-peer-chosen-name' as never);
    metrics.policyReload('ok');
    metrics.policyReload('weird' as never);
    const { samples } = await scrape(metrics);
    expect(valueOf(samples, 'postern_handshake_failures_total', { place: 'outer', code: 'POSTERN_ERR_TLS_CERT_REVOKED' })).toBe(1);
    expect(valueOf(samples, 'postern_handshake_failures_total', { place: 'outer', code: 'other' })).toBe(1);
    expect(valueOf(samples, 'postern_handshake_failures_total', { place: 'other', code: 'other' })).toBe(1);
    expect(valueOf(samples, 'postern_limits_hit_total', { limit: 'maxConcurrentHandshakes' })).toBe(1);
    expect(valueOf(samples, 'postern_limits_hit_total', { limit: 'other' })).toBe(1);
    expect(valueOf(samples, 'postern_policy_reloads_total', { result: 'ok' })).toBe(1);
    expect(valueOf(samples, 'postern_policy_reloads_total', { result: 'rejected' })).toBe(1);
    for (const s of samples.filter((x) => x.name === 'postern_handshake_failures_total')) {
      expect([...HANDSHAKE_PLACES]).toContain(s.labels['place']);
      expect(s.labels['code']).toMatch(/^(POSTERN_ERR_[A-Z0-9_]+|other)$/);
    }
  });

  it("a session's refusal of a peer's open by one of its limits is counted under that limit's name", async () => {
    const metrics = createMetrics('connector');
    const pair = memoryTransportPair();
    const quiet = { pingIntervalMs: 1_800_000, deadPeerTimeoutMs: 3_600_000 };
    const client = new Session(pair.client, { role: 'client', ...quiet });
    const server = new Session(pair.server, { role: 'server', ...quiet, maxStreams: 8, maxPendingOpens: 1 });
    metrics.countLimits(server);
    // The first open stays pending (never decided): the second hits maxPendingOpens.
    server.on('open', () => undefined);
    const first = client.open({ n: '1' }).catch((e: unknown) => e);
    await expect(client.open({ n: '2' })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_LIMIT_REACHED' });
    const { samples } = await scrape(metrics);
    expect(valueOf(samples, 'postern_limits_hit_total', { limit: 'maxPendingOpens' })).toBe(1);
    expect(valueOf(samples, 'postern_limits_hit_total', { limit: 'maxStreams' })).toBe(0);
    client.destroy();
    server.destroy();
    await first;
    await pair.close();
  });

  it('gauges read their sources at scrape time', async () => {
    const metrics = createMetrics('relay');
    let tunnels = 2;
    metrics.readGauges({
      tunnelsUp: () => tunnels,
      agentSessions: () => 5,
      certificateExpiry: () => ({ cert: new Date('2030-01-02T03:04:05.678Z'), ca: new Date('2035-01-01T00:00:00Z') }),
    });
    let { samples } = await scrape(metrics);
    expect(valueOf(samples, 'postern_tunnels_up')).toBe(2);
    expect(valueOf(samples, 'postern_agent_sessions')).toBe(5);
    expect(valueOf(samples, 'postern_certificate_expiry_timestamp_seconds', { kind: 'cert' })).toBe(Math.floor(Date.parse('2030-01-02T03:04:05Z') / 1000));
    expect(valueOf(samples, 'postern_certificate_expiry_timestamp_seconds', { kind: 'inner_cert' })).toBeUndefined();
    tunnels = 0;
    ({ samples } = await scrape(metrics));
    expect(valueOf(samples, 'postern_tunnels_up')).toBe(0);
  });

  it('reconnects and TLS reloads count one by one', async () => {
    const metrics = createMetrics('connector');
    metrics.reconnect();
    metrics.reconnect();
    metrics.tlsReload('rejected');
    const { samples } = await scrape(metrics);
    expect(valueOf(samples, 'postern_reconnects_total')).toBe(2);
    expect(valueOf(samples, 'postern_tls_reloads_total', { result: 'rejected' })).toBe(1);
    expect(valueOf(samples, 'postern_tls_reloads_total', { result: 'ok' })).toBe(0);
  });
});
