import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent } from '../../../agent-lib/index.js';
import { createRelay, type Relay } from '../../../relay/index.js';
import { relayConfigSchema } from '../../../relay/options.js';
import { Session, type IncomingOpen } from '../../../src/mux/index.js';
import { connectWebSocket, wsTransport } from '../../../src/mux/ws-transport.js';
import { validateOptions } from '../../../src/options.js';
import { clientTlsOptions, loadTlsMaterial } from '../../../src/pki/index.js';
import { DEFAULT_DECODE_LIMITS, maxMessageSize } from '../../../src/protocol/frames.js';
import { OpenResult } from '../../../src/protocol/reasons.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { captureAudit, captureLogger } from '../connector/helpers.js';

/**
 * The agent's inner ClientHello rides as early data behind its OPEN (docs/protocol.md §4), and
 * the real relay passes it on behind its own OPEN to the connector: a connector held by the test
 * sees the ClientHello before it has answered the open, so the inner handshake costs no round
 * trip of its own through the relay.
 */
describe('early data through the real relay', () => {
  let pki: TestPki;
  let relay: Relay;
  let session: Session;
  let audit: ReturnType<typeof captureAudit>;
  let url: string;
  const agents: Agent[] = [];

  beforeAll(async () => {
    pki = await makeTestPki();
    const policyFile = join(pki.dir, 'policy.yaml');
    await writeFile(
      policyFile,
      `
version: 1
trustDomain: "${pki.trustDomain}"
orgs:
  st-mary:
    connectors:
      hq: { targets: ["db.internal:5432"] }
rules:
  - { id: alice-db, org: st-mary, principals: ["user/alice"], connector: hq, targets: ["db.internal:5432"], action: allow }
`,
    );
    audit = captureAudit();
    const config = validateOptions(
      relayConfigSchema,
      { trustDomain: pki.trustDomain, listen: '127.0.0.1:0', tls: { ...pki.files('relay', 'relay-1'), ca: pki.ca, crl: pki.crl }, policy: { file: policyFile }, admin: false },
      'test relay config',
    );
    relay = await createRelay(config, { logger: captureLogger('warn').logger, audit: audit.audit });
    url = `wss://localhost:${(await relay.start()).port}`;
    // Connector hq, driven by hand: its session shows what the relay sends and when.
    const hq = loadTlsMaterial({ ...pki.files('connector', 'hq'), ca: pki.ca, crl: pki.crl });
    const { ws } = await connectWebSocket(`${url}/v1/tunnel`, {
      tls: clientTlsOptions(hq, { trustDomain: pki.trustDomain, presentedAs: 'relay-server' }),
      maxPayload: maxMessageSize(DEFAULT_DECODE_LIMITS),
      handshakeTimeoutMs: 10_000,
    });
    session = new Session(wsTransport(ws), { role: 'client' });
    await audit.events.waitFor((e) => e.event === 'tunnel.up' && e['connector'] === 'st-mary/hq');
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    session?.destroy();
    await relay?.stop(0);
    await pki?.cleanup();
  });

  it("the connector holds the agent's ClientHello before it answers the open; a refusal drops it and reaches the agent", async () => {
    const agent = new Agent({ trustDomain: pki.trustDomain, relay: url, tls: { ...pki.files('user', 'alice'), ca: pki.ca, crl: pki.crl } });
    agents.push(agent);
    const held = new Promise<IncomingOpen>((resolve) => session.once('open', resolve));
    const dial = agent.dial({ connector: 'hq', target: 'db.internal:5432' }).catch((e: unknown) => e);
    const incoming = await held;
    const early = await new Promise<Buffer>((resolve) => incoming.forwardEarlyData(resolve));
    // A TLS record of type handshake (0x16) whose first message is a ClientHello (1).
    expect(early[0]).toBe(0x16);
    expect(early[5]).toBe(1);
    expect(incoming.metadata).toMatchObject({ target: 'db.internal:5432', principal: expect.stringContaining('/user/alice') });
    incoming.reject(OpenResult.TARGET_REFUSED, 'nothing listens there');
    expect(await dial).toMatchObject({ code: 'POSTERN_ERR_OPEN_TARGET_REFUSED', stage: 'open' });
  });
});
