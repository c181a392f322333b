import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateOptions } from '../../../src/options.js';
import { GoAwayReason, OpenResult } from '../../../src/protocol/reasons.js';
import { createConnector, type Connector } from '../../../connector/index.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { agentMaterial, captureAudit, captureLogger, openAsAgent, readAll, startFakeRelay, tcpTarget, type FakeRelay } from './helpers.js';

/**
 * Reconnects over real wss with the real clock: delays are kept to a few milliseconds and every
 * step is awaited on the connector's own log events, never on time.
 */
describe('connector reconnects to a real relay endpoint', () => {
  let pki: TestPki;
  let relay: FakeRelay;
  let echo: Awaited<ReturnType<typeof tcpTarget>>;
  let connector: Connector;
  const { logger, lines } = captureLogger();
  const { audit, events } = captureAudit();
  const event = (name: string) => (l: { event?: string }) => l.event === name;

  beforeAll(async () => {
    pki = await makeTestPki();
    relay = await startFakeRelay(pki);
    echo = await tcpTarget((s) => s.pipe(s));
    const conn = pki.files('connector', 'hq');
    connector = createConnector(
      validateOptions(connectorConfigSchema, {
        trustDomain: pki.trustDomain,
        relays: [relay.url],
        tls: { cert: conn.cert, key: conn.key, ca: pki.ca, crl: pki.crl },
        allowlist: { targets: [`127.0.0.1:${echo.port}`] },
        reconnect: { initialDelayMs: 2, maxDelayMs: 8 },
        // Not the default 127.0.0.1:9091: test files run side by side.
        admin: false,
      }, 'test'),
      { logger, audit },
    );
  });

  afterAll(async () => {
    await connector?.stop();
    await relay?.close();
    await echo?.close();
    await pki?.cleanup();
  });

  it('keeps retrying while the relay refuses (here: draining, HTTP 503), then comes up', async () => {
    relay.refuseNext(3);
    await connector.start();
    const up = await lines.waitFor(event('tunnel.up'));
    const retries = lines.items.filter(event('tunnel.retry'));
    expect(retries).toHaveLength(3);
    for (const retry of retries) expect(retry).toMatchObject({ relay: relay.url, error: 'POSTERN_ERR_OPEN_GOING_AWAY' });
    expect(retries.map((r) => r['attempt'])).toEqual([1, 2, 3]);
    for (const [i, retry] of retries.entries()) expect(retry['delayMs']).toBeLessThan(Math.min(8, 2 * 2 ** i));
    expect(relay.upgrades.map((u) => u.refused)).toEqual([true, true, true, false]);
    expect(lines.items.indexOf(up)).toBeGreaterThan(lines.items.indexOf(retries[2]!));
    expect(connector.status().tunnels[0]).toMatchObject({ up: true });
  });

  it('comes back when the relay drops the tunnel, and serves streams on the new one', async () => {
    const first = await relay.sessions.waitFor(() => true, 1);
    first.destroy();
    expect(await lines.waitFor(event('tunnel.down'))).toMatchObject({ relay: relay.url, code: 'POSTERN_ERR_WS_CLOSED' });
    await lines.waitFor(event('tunnel.up'), 2);
    const second = await relay.sessions.waitFor(() => true, 2);
    const { tls, response } = await openAsAgent(second, agentMaterial(pki, pki.files('user', 'alice')), {
      trustDomain: pki.trustDomain,
      target: `127.0.0.1:${echo.port}`,
      principal: `spiffe://${pki.trustDomain}/org/st-mary/user/alice`,
    });
    expect(response.status).toBe(OpenResult.OK);
    const back = readAll(tls);
    tls.end('after reconnect');
    expect((await back).toString()).toBe('after reconnect');
    expect(events.items.filter((e) => e.event.startsWith('tunnel.')).map((e) => e.event)).toEqual(['tunnel.up', 'tunnel.down', 'tunnel.up']);
  });

  it('on GOAWAY dials a new tunnel before the old one closes; a stream on the old one finishes', async () => {
    const old = await relay.sessions.waitFor(() => true, 2);
    const { tls, response } = await openAsAgent(old, agentMaterial(pki, pki.files('user', 'alice')), {
      trustDomain: pki.trustDomain,
      target: `127.0.0.1:${echo.port}`,
      principal: `spiffe://${pki.trustDomain}/org/st-mary/user/alice`,
    });
    expect(response.status).toBe(OpenResult.OK);
    const retriesBefore = lines.count(event('tunnel.retry'));
    let oldClosedBeforeNewTunnel: boolean | undefined;
    const third = relay.sessions.waitFor(() => true, 3).then((s) => {
      oldClosedBeforeNewTunnel = old.closed;
      return s;
    });
    old.goAway(GoAwayReason.DRAIN, 'relay stopping');
    await third;
    expect(oldClosedBeforeNewTunnel).toBe(false);
    await lines.waitFor(event('tunnel.up'), 3);
    expect(connector.status().tunnels[0]).toMatchObject({ up: true, streams: 1 });

    // The draining tunnel still carries the stream both ways, then closes once it ends.
    const back = readAll(tls);
    tls.end('drained');
    expect((await back).toString()).toBe('drained');
    await new Promise<void>((resolve) => (old.closed ? resolve() : old.once('close', () => resolve())));
    expect(await lines.waitFor(event('tunnel.down'), 2)).toMatchObject({ reason: 'closed' });
    // No backoff on a GOAWAY: the new tunnel was dialed at once.
    expect(lines.count(event('tunnel.retry'))).toBe(retriesBefore);
    expect(connector.status().tunnels[0]).toMatchObject({ up: true, streams: 0 });
  });
});
