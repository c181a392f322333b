import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent } from '../../../agent-lib/index.js';
import { acceptInnerTls } from '../../../connector/inner-tls.js';
import { createConnector, type Connector } from '../../../connector/index.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { createRelay, type Relay } from '../../../relay/index.js';
import type { OpenContext } from '../../../relay/opens.js';
import { relayConfigSchema } from '../../../relay/options.js';
import type { IncomingOpen } from '../../../src/mux/index.js';
import { validateOptions } from '../../../src/options.js';
import { loadTlsMaterial, serverTlsOptions, type TlsMaterial } from '../../../src/pki/index.js';
import { OpenResult } from '../../../src/protocol/reasons.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { agentMaterial, captureAudit, captureLogger, openAsAgent } from '../connector/helpers.js';

/**
 * Issue 3's malicious relay, built from the REAL relay (createRelay: its door, its mTLS, its
 * sessions), patched in the test only: its open handler is swapped, through the module seam
 * relay/index.ts imports it by, for an impostor. No production code knows about it.
 */
type Impostor = (incoming: IncomingOpen, ctx: OpenContext) => Promise<void>;
const patch = vi.hoisted(() => ({ impostor: undefined as Impostor | undefined }));

vi.mock('../../../relay/opens.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../../relay/opens.js')>();
  return {
    ...real,
    handleAgentOpen: (incoming: IncomingOpen, principal: Parameters<typeof real.handleAgentOpen>[1], ctx: OpenContext) =>
      patch.impostor ? patch.impostor(incoming, ctx) : real.handleAgentOpen(incoming, principal, ctx),
  };
});

/**
 * The relay accepts the agent's open itself and terminates inner TLS with `tls`, exactly as the
 * connector would (connector/inner-tls.ts): the agent must refuse it after the handshake, when
 * it checks the certificate it got against the connector it asked for.
 */
function terminateInnerTls(tls: TlsMaterial): Impostor {
  return async (incoming, ctx) => {
    const stream = incoming.accept({ 'correlation-id': 'impostor', relay: ctx.relayIdentity.uri });
    // The server side may complete its handshake (TLS 1.3: the client's check runs after its
    // Finished); the agent then drops the stream, which is the outcome under test.
    const inner = await acceptInnerTls(stream, serverTlsOptions(tls), { timeoutMs: 10_000, lingerMs: 1_000 }).catch(() => undefined);
    inner?.tls.on('error', () => inner.tls.destroy());
  };
}

describe('a malicious relay built from the real relay', () => {
  let pki: TestPki;
  let relay: Relay;
  let connector: Connector;
  let connectorAudit: ReturnType<typeof captureAudit>;
  let url: string;
  const agents: Agent[] = [];

  const newAgent = (name = 'alice'): Agent => {
    const files = pki.files('user', name);
    const agent = new Agent({ trustDomain: pki.trustDomain, relay: url, tls: { ...files, ca: pki.ca, crl: pki.crl } });
    agents.push(agent);
    return agent;
  };
  const material = (role: 'relay' | 'connector', name: string): TlsMaterial => loadTlsMaterial({ ...pki.files(role, name), ca: pki.ca, crl: pki.crl });

  beforeAll(async () => {
    pki = await makeTestPki();
    await pki.issue('connector', 'other', { org: 'st-mary' });
    await pki.issue('user', 'oscar', { org: 'other-org' });
    // A policy that allows everything the tests ask for: the relay's decisions are not what is tested.
    const policyFile = join(pki.dir, 'policy.yaml');
    await writeFile(
      policyFile,
      `
version: 1
trustDomain: "${pki.trustDomain}"
orgs:
  st-mary:
    connectors:
      hq: { targets: ["db.internal:5432", "127.0.0.1:1-65535"] }
      other: { targets: ["db.internal:5432"] }
  other-org:
    connectors:
      hq: { targets: ["db.internal:5432"] }
rules:
  - { id: all-st-mary, org: st-mary, principals: ["*"], connector: "*", targets: ["db.internal:5432", "127.0.0.1:1-65535"], action: allow }
  - { id: all-other-org, org: other-org, principals: ["*"], connector: "*", targets: ["db.internal:5432"], action: allow }
`,
    );
    const relayFiles = pki.files('relay', 'relay-1');
    const config = validateOptions(
      relayConfigSchema,
      { trustDomain: pki.trustDomain, listen: '127.0.0.1:0', tls: { ...relayFiles, ca: pki.ca, crl: pki.crl }, policy: { file: policyFile }, admin: false },
      'test relay config',
    );
    relay = await createRelay(config, { logger: captureLogger('warn').logger, audit: captureAudit().audit });
    const { port } = await relay.start();
    url = `wss://localhost:${port}`;

    // The real connector hq on the real relay, for the refusal that needs both.
    const { logger, lines } = captureLogger();
    connectorAudit = captureAudit();
    const hq = pki.files('connector', 'hq');
    connector = createConnector(
      validateOptions(connectorConfigSchema, {
        trustDomain: pki.trustDomain,
        relays: [url],
        tls: { ...hq, ca: pki.ca, crl: pki.crl },
        allowlist: { targets: ['127.0.0.1:1-65535'] },
        admin: false,
      }, 'test connector config'),
      { logger, audit: connectorAudit.audit },
    );
    await connector.start();
    await lines.waitFor((l) => l.event === 'tunnel.up');
  });

  afterAll(async () => {
    patch.impostor = undefined;
    await Promise.all(agents.map((a) => a.close()));
    await connector?.stop();
    await relay?.stop(0);
    await pki?.cleanup();
  });

  it('terminating inner TLS with its own relay certificate: dial() fails POSTERN_ERR_ID_WRONG_ROLE at stage inner-tls', async () => {
    patch.impostor = terminateInnerTls(material('relay', 'relay-1'));
    const err = await newAgent().dial({ connector: 'hq', target: 'db.internal:5432' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'POSTERN_ERR_ID_WRONG_ROLE', stage: 'inner-tls' });
    expect((err as Error).message).toContain('relay');
  });

  it('terminating inner TLS with connector "other" of the same CA and org: dial() fails POSTERN_ERR_ID_NAME_MISMATCH', async () => {
    patch.impostor = terminateInnerTls(material('connector', 'other'));
    const err = await newAgent().dial({ connector: 'hq', target: 'db.internal:5432' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'POSTERN_ERR_ID_NAME_MISMATCH', stage: 'inner-tls' });
    expect((err as Error).message).toContain('other');
  });

  it('the unpatched relay, same agent and connector id: the real connector answers and dial() succeeds (the refusals above are the impostor\'s)', async () => {
    patch.impostor = undefined;
    // No target listens at 127.0.0.1:1: the open goes all the way to the connector's dial,
    // which proves the inner TLS with the real connector "hq" was accepted by the agent.
    const err = await newAgent().dial({ connector: 'hq', target: '127.0.0.1:1' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'POSTERN_ERR_OPEN_TARGET_REFUSED', stage: 'inner-response' });
  });

  it('a relay forwarding an agent of another org to the real connector (claiming she is alice): the connector refuses her inner certificate, POSTERN_ERR_ID_ORG_MISMATCH', async () => {
    // The impostor keeps the relay's tunnel to hq and plays the agent's part on it with oscar's
    // certificate (org other-org), naming alice of st-mary in the open's metadata.
    let captured: OpenContext | undefined;
    patch.impostor = async (incoming, ctx) => {
      captured = ctx;
      incoming.reject(OpenResult.POLICY_DENIED, 'impostor: only capturing the tunnel');
    };
    await expect(newAgent().dial({ connector: 'hq', target: 'db.internal:5432' })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_POLICY_DENIED' });
    const tunnel = captured!.registry.pick('st-mary', 'hq');
    expect(tunnel).toBeDefined();
    const alice = `spiffe://${pki.trustDomain}/org/st-mary/user/alice`;
    const attempt = openAsAgent(tunnel!.session, agentMaterial(pki, pki.files('user', 'oscar')), {
      trustDomain: pki.trustDomain,
      target: '127.0.0.1:1',
      principal: alice,
      correlationId: 'cid-oscar',
    });
    await expect(attempt).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_INNER_TLS_FAILED' });
    const refused = await connectorAudit.events.waitFor((e) => e.event === 'handshake.refused' && e['code'] === 'POSTERN_ERR_ID_ORG_MISMATCH');
    expect(refused).toMatchObject({ place: 'inner' });
    expect(connectorAudit.events.items.filter((e) => e.event === 'stream.open' && e['decision'] === 'allow' && e['correlationId'] === 'cid-oscar')).toEqual([]);
  });
});
