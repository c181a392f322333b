import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { Agent } from '../../agent-lib/index.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { stopAll, type LogLine } from '../helpers/processes.js';
import { echoServer } from '../helpers/relay-pool.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Hot reload proven on real processes (issue 4, item 4): a CRL re-signed by `postern pki revoke`
 * and a policy file replaced by rename reach the running relay and connector, which reset the
 * live streams no longer allowed, with a specific reason, and nothing else; a malformed file is
 * refused with the file and field named, and the old policy keeps working.
 */

/** Sends `n` random bytes and resolves once the same bytes came back. */
async function roundTrip(socket: Socket | TLSSocket, n = 4096): Promise<void> {
  const sent = randomBytes(n);
  const got: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (c: Buffer) => {
      got.push(c);
      size += c.length;
      if (size >= n) done();
    };
    const onEnd = (err?: Error) => {
      done();
      reject(err ?? new Error(`stream ended after ${size} of ${n} echoed bytes`));
    };
    const done = () => {
      socket.off('data', onData);
      socket.off('error', onEnd);
      socket.off('close', onClose);
      resolve();
    };
    const onClose = () => onEnd();
    socket.on('data', onData);
    socket.once('error', onEnd);
    socket.once('close', onClose);
    socket.write(sent);
  });
  expect(Buffer.concat(got).equals(sent)).toBe(true);
}

/** How a dialed stream ended: the first error (if any) and when, by performance.now(). */
function watchEnd(socket: TLSSocket): Promise<{ at: number; error: (Error & { code?: string }) | undefined }> {
  return new Promise((resolve) => {
    let error: (Error & { code?: string }) | undefined;
    socket.once('error', (err) => {
      error ??= err;
    });
    socket.once('close', () => resolve({ at: performance.now(), error }));
  });
}

/** Writes the file next to its final name, then renames it over: how tooling replaces config. */
async function replaceFile(path: string, text: string): Promise<void> {
  const temp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(temp, text);
  await rename(temp, path);
}

const policyText = (td: string, echo: number, rules: string[]): string => `
version: 1
trustDomain: "${td}"
orgs:
  st-mary:
    connectors:
      hq:
        targets: ["127.0.0.1:${echo}"]
rules:
${rules.join('')}`;

const rule = (id: string, principal: string, echo: number): string => `  - id: ${id}
    org: st-mary
    principals: [${principal}]
    connector: hq
    targets: ["127.0.0.1:${echo}"]
    action: allow
`;

describe('hot reload on a running relay and connector (real processes)', () => {
  let pki: TestPki;
  let stack: Stack;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  const agents: Agent[] = [];
  let policyPath: string;
  let allRules: string[];

  const agentFor = (name: string): Agent => {
    const files = pki.files('user', name);
    const agent = new Agent({ trustDomain: pki.trustDomain, relay: stack.relayUrl, tls: { cert: files.cert, key: files.key, ca: pki.ca, crl: pki.crl } });
    agents.push(agent);
    return agent;
  };
  const target = () => `127.0.0.1:${echo.port}`;
  const relayEvents = (match: (l: LogLine) => boolean) => stack.relay.lines.filter(match);
  const connectorEvents = (match: (l: LogLine) => boolean) => stack.connector.lines.filter(match);

  beforeAll(async () => {
    pki = await makeTestPki();
    await pki.issue('user', 'bob', { org: 'st-mary' });
    await pki.issue('user', 'carol', { org: 'st-mary' });
    echo = await echoServer();
    allRules = [rule('alice-echo', 'user/alice', echo.port), rule('bob-echo', 'user/bob', echo.port), rule('carol-echo', 'user/carol', echo.port)];
    stack = await startStack({ pki, allowlist: [`127.0.0.1:${echo.port}`], policy: policyText('{{TD}}', echo.port, allRules) });
    policyPath = join(stack.dir, 'policy.yaml');
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await stack?.stop();
    await stopAll();
    await echo?.close();
    await pki?.cleanup();
  });

  it('`postern pki revoke` cuts the revoked user\'s live stream within 5 s with REVOKED; the tunnel and another user\'s stream stay up', async () => {
    const alice = await agentFor('alice').dial({ connector: 'hq', target: target() });
    const carolAgent = agentFor('carol');
    const carolInfo = await carolAgent.dialWithInfo({ connector: 'hq', target: target() });
    const carol = carolInfo.socket;
    await Promise.all([roundTrip(alice), roundTrip(carol)]);
    const tunnelUp = await stack.connector.waitFor('tunnel.up');
    const relayTunnelsBefore = relayEvents((l) => l.event === 'tunnel.up').length;
    const carolEnded = watchEnd(carol);
    const aliceEnded = watchEnd(alice);

    await pki.revoke(pki.files('user', 'carol').cert);
    const revokedAt = performance.now();
    const ended = await carolEnded;
    const resetMs = Math.max(0, ended.at - revokedAt);
    console.log(`[reload e2e] revoke → reset seen by the agent: ${Math.round(resetMs)} ms`);
    expect(resetMs).toBeLessThanOrEqual(5_000);
    expect(ended.error?.code).toMatch(/^POSTERN_ERR_(STREAM|SESSION)_REVOKED$/);

    // The relay and the connector each audit the reason for carol's stream. Both watch the CRL;
    // whichever reloads first resets the stream ("revoked"), the other passes that RESET on and
    // audits its code (POSTERN_ERR_STREAM_REVOKED).
    const relayClose = await stack.relayAudit((l) => l.event === 'stream.close' && l['correlationId'] === carolInfo.correlationId);
    expect(relayClose).toMatchObject({ principal: expect.stringContaining('/user/carol') });
    expect(String(relayClose['reason'])).toMatch(/^(revoked|connector: POSTERN_ERR_STREAM_REVOKED)$/);
    const connectorClose = await stack.connector.waitFor((l) => l['audit'] === true && l.event === 'stream.close' && l['correlationId'] === carolInfo.correlationId);
    expect(String(connectorClose['reason'])).toMatch(/^(revoked|agent: POSTERN_ERR_STREAM_REVOKED)$/);
    // The relay also ends carol's whole agent session: her certificate is no longer good for anything.
    await stack.relay.waitFor((l) => l.event === 'session.revoked' && String(l['peer']).endsWith('/user/carol'));

    // alice's stream and the tunnel are untouched: a round trip after the reset, no tunnel change.
    await roundTrip(alice);
    expect(alice.destroyed).toBe(false);
    expect(connectorEvents((l) => l.event === 'tunnel.down')).toEqual([]);
    // (The connector writes tunnel.up twice: its log line and its audit line.)
    expect(new Set(connectorEvents((l) => l.event === 'tunnel.up').map((l) => l['tunnelId']))).toEqual(new Set([tunnelUp['tunnelId']]));
    expect(relayEvents((l) => l.event === 'tunnel.up')).toHaveLength(relayTunnelsBefore);
    expect(relayEvents((l) => l['audit'] === true && l.event === 'stream.reset' && String(l['principal']).endsWith('/user/alice'))).toEqual([]);

    // A new session of carol's is refused now, in the relay's TLS handshake (with TLS 1.3 her
    // side only sees the connection drop; the relay audits why).
    const refused = stack.relayAudit((l) => l.event === 'handshake.refused' && l['code'] === 'POSTERN_ERR_TLS_CERT_REVOKED');
    await expect(agentFor('carol').dial({ connector: 'hq', target: target() })).rejects.toMatchObject({ stage: 'session' });
    await refused;
    alice.destroy();
    await aliceEnded;
  });

  it('a policy file replaced by rename without a rule resets the streams under that rule (POLICY_CHANGED), not the others', async () => {
    const aliceInfo = await agentFor('alice').dialWithInfo({ connector: 'hq', target: target() });
    const bobInfo = await agentFor('bob').dialWithInfo({ connector: 'hq', target: target() });
    const alice = aliceInfo.socket;
    const bob = bobInfo.socket;
    // bob also runs `postern agent forward`, a client on its local port.
    const forward = await stack.forward({ config: await stack.agentConfig(pki.files('user', 'bob'), 'bob'), connector: 'hq', target: target() });
    const local = connect({ host: '127.0.0.1', port: forward.port });
    await Promise.all([roundTrip(alice), roundTrip(bob), roundTrip(local)]);
    const bobEnded = watchEnd(bob);
    const localEnded = new Promise<void>((resolve) => local.once('close', () => resolve()));
    local.on('error', () => undefined);
    const appliedBefore = relayEvents((l) => l.event === 'reload.applied' && l['group'] === 'policy').length;

    await replaceFile(policyPath, policyText(pki.trustDomain, echo.port, allRules.filter((r) => !r.includes('bob-echo'))));
    const changedAt = performance.now();
    const ended = await bobEnded;
    console.log(`[reload e2e] policy replaced → reset seen by the agent: ${Math.round(Math.max(0, ended.at - changedAt))} ms`);
    expect(ended.at - changedAt).toBeLessThanOrEqual(5_000);
    expect(ended.error?.code).toBe('POSTERN_ERR_STREAM_POLICY_CHANGED');
    expect(ended.error?.message).toContain('user/bob');

    // The agent CLI prints the code, the reset's name and the relay's reason.
    const printed = await forward.handle.waitFor('forward.reset');
    expect(printed).toMatchObject({ code: 'POSTERN_ERR_STREAM_POLICY_CHANGED', reset: 'POLICY_CHANGED', reason: expect.stringContaining('user/bob') });
    expect(printed.msg).toContain('POSTERN_ERR_STREAM_POLICY_CHANGED');
    await localEnded;

    const reset = await stack.relayAudit((l) => l.event === 'stream.reset' && l['correlationId'] === bobInfo.correlationId);
    expect(reset).toMatchObject({ reason: 'policy-changed' });
    expect(relayEvents((l) => l.event === 'reload.applied' && l['group'] === 'policy').length).toBeGreaterThan(appliedBefore);
    expect(relayEvents((l) => l.event === 'stream.reset' && l['correlationId'] === aliceInfo.correlationId)).toEqual([]);
    await roundTrip(alice);
    await expect(agentFor('bob').dial({ connector: 'hq', target: target() })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_POLICY_DENIED' });
    alice.destroy();
  });

  it('a malformed policy file is refused with a reload.failed line naming the file and the field; the old policy stays in force', async () => {
    const alice = await agentFor('alice').dial({ connector: 'hq', target: target() });
    await roundTrip(alice);
    const aliceEnded = watchEnd(alice);
    const failedBefore = relayEvents((l) => l.event === 'reload.failed').length;

    // A rule with its action misspelled: valid YAML, invalid policy.
    const broken = policyText(pki.trustDomain, echo.port, [rule('alice-echo', 'user/alice', echo.port).replace('action: allow', 'action: permit')]);
    await replaceFile(policyPath, broken);
    const failed = await stack.relay.waitFor((l) => l.event === 'reload.failed' && relayEvents((x) => x.event === 'reload.failed').indexOf(l) >= failedBefore);
    expect(failed).toMatchObject({ group: 'policy', file: policyPath, code: 'POSTERN_ERR_POLICY_INVALID' });
    // file:line:col, then the field and what was expected.
    expect(String(failed['err'])).toMatch(/policy\.yaml:\d+:\d+: rules\[0\]\.action: must be "allow" or "deny"/);

    // The old policy (alice and carol allowed, bob not) still decides: alice's live stream runs
    // on, a new open by alice works, bob is still refused.
    await roundTrip(alice);
    const again = await agentFor('alice').dial({ connector: 'hq', target: target() });
    await roundTrip(again);
    await expect(agentFor('bob').dial({ connector: 'hq', target: target() })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_POLICY_DENIED' });
    expect(alice.destroyed).toBe(false);
    again.destroy();
    alice.destroy();
    await aliceEnded;
  });

  it('SIGHUP makes the relay and the connector re-read their files at once (no file changed); tunnel and streams stay', async () => {
    const alice = await agentFor('alice').dial({ connector: 'hq', target: target() });
    try {
      await roundTrip(alice);
      const count = (lines: LogLine[]) => lines.filter((l) => l.event === 'reload.applied').length;
      const relayBefore = count(stack.relay.lines);
      const connectorBefore = count(stack.connector.lines);
      stack.relay.child.kill('SIGHUP');
      stack.connector.child.kill('SIGHUP');
      // (The TLS group: the policy file is still the malformed one of the test before.)
      await stack.relay.waitFor((l) => l.event === 'reload.applied' && l['group'] === 'tls' && count(stack.relay.lines) > relayBefore);
      await stack.connector.waitFor((l) => l.event === 'reload.applied' && l['group'] === 'tls' && count(stack.connector.lines) > connectorBefore);
      expect(stack.relay.lines.some((l) => l.event === 'process.reload')).toBe(true);
      await roundTrip(alice);
      expect(connectorEvents((l) => l.event === 'tunnel.down')).toEqual([]);
    } finally {
      alice.destroy();
    }
  });
});
