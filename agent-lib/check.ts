import type { Agent } from './agent.js';

/** What `postern agent check` shows: who is on each end of each TLS layer, and how fast the path is. */
export interface CheckReport {
  connector: string;
  target: string;
  /** The agent's own SPIFFE ID. */
  agent: string;
  relay: { identity: string; tlsVersion: string; cipher: string };
  /** The inner TLS peer: must be the connector asked for (the relay cannot pass this check). */
  inner: { identity: string; tlsVersion: string; cipher: string };
  /** Round-trip times of PINGs on the relay session, ms, in the order measured. */
  sessionRttMs: number[];
  /** From the open request to the connector's "connected", ms. */
  streamSetupMs: number;
  /** The relay's id for the stream: grep the relay's and the connector's audit logs for it. */
  correlationId: string | null;
}

/** Number of PINGs: enough to see a warm figure next to the first one. */
const PINGS = 3;

/** Dials once and collects the evidence of the path; the stream is closed before it returns. */
export async function runCheck(agent: Agent, o: { connector: string; target: string }): Promise<CheckReport> {
  // The session first, so that the stream's set-up time is the stream's alone.
  await agent.ping();
  const info = await agent.dialWithInfo({ connector: o.connector, target: o.target });
  try {
    const sessionRttMs: number[] = [];
    for (let i = 0; i < PINGS; i++) sessionRttMs.push(round(await agent.ping()));
    return {
      connector: info.connector,
      target: info.target,
      agent: agent.identity.uri,
      relay: { identity: info.relayIdentity.uri, tlsVersion: info.relayTlsVersion, cipher: info.relayCipher },
      inner: { identity: info.connectorIdentity.uri, tlsVersion: info.tlsVersion, cipher: info.cipher },
      sessionRttMs,
      streamSetupMs: round(info.setupMs),
      correlationId: info.correlationId ?? null,
    };
  } finally {
    info.socket.destroy();
  }
}

/** The report as lines a person reads. */
export function formatCheckReport(r: CheckReport): string {
  return [
    `agent            ${r.agent}`,
    `relay            ${r.relay.identity} (outer ${r.relay.tlsVersion}, ${r.relay.cipher})`,
    `connector        ${r.inner.identity} (inner ${r.inner.tlsVersion}, ${r.inner.cipher}, end to end: the relay sees ciphertext only)`,
    `target           ${r.target} via connector "${r.connector}": connected`,
    `session RTT      ${r.sessionRttMs.map((ms) => `${ms} ms`).join(', ')} (PING on the relay session)`,
    `stream set-up    ${r.streamSetupMs} ms (open, inner TLS handshake, connector's connect to the target)`,
    ...(r.correlationId ? [`correlation id   ${r.correlationId} (in the relay's and the connector's audit lines)`] : []),
    '',
  ].join('\n');
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
