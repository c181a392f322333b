import type { IncomingMessage } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { Session, type IncomingOpen, type MuxStream } from '../../../src/mux/index.js';
import { acceptUpgrade, createWebSocketServer, refuseUpgrade, wsTransport } from '../../../src/mux/ws-transport.js';
import { readMessage } from '../../../src/net/read-message.js';
import { acceptInnerTls } from '../../../connector/inner-tls.js';
import { loadTlsMaterial, serverTlsOptions, type TlsMaterial } from '../../../src/pki/index.js';
import { maxMessageSize, DEFAULT_DECODE_LIMITS } from '../../../src/protocol/frames.js';
import { decodeInnerRequest, encodeInnerResponse } from '../../../src/protocol/inner.js';
import { OpenResult } from '../../../src/protocol/reasons.js';
import type { TestPki } from '../../helpers/pki.js';

/** What the fake does with one open from the agent. */
export type OpenBehavior = (incoming: IncomingOpen, session: Session) => void | Promise<void>;

export interface FakeRelay {
  url: string;
  /** WebSocket sessions accepted on /v1/agent so far. */
  readonly upgrades: number;
  readonly sessions: Session[];
  /** Metadata of every open received, in order. */
  readonly opens: Array<Record<string, string>>;
  /** Agent-side streams accepted by behaviors (connectorSide pushes here), for checks on how they ended. */
  readonly accepted: MuxStream[];
  behavior: OpenBehavior;
  close(): Promise<void>;
}

export function material(pki: TestPki, role: 'relay' | 'connector' | 'user' | 'service', name: string, crl = true): TlsMaterial {
  return loadTlsMaterial({ ...pki.files(role, name), ca: pki.ca, ...(crl ? { crl: pki.crl } : {}) });
}

/**
 * A relay-shaped server for agent tests: https on 127.0.0.1:0 with the relay certificate,
 * WebSocket sessions on /v1/agent (anything else is refused with 404), and each open handed to
 * `behavior` — by default it plays the connector itself (see `connectorSide`).
 */
export async function startFakeRelay(pki: TestPki, behavior: OpenBehavior): Promise<FakeRelay> {
  // No CRL at the door: like a relay with a stale CRL, it lets a revoked agent through, so the
  // connector's own refusal can be tested.
  const relay = material(pki, 'relay', 'relay-1', false);
  const server = createHttpsServer({ ...serverTlsOptions(relay) });
  const wss = createWebSocketServer({ maxPayload: maxMessageSize(DEFAULT_DECODE_LIMITS) });
  const sockets = new Set<Duplex>();
  const state = {
    upgrades: 0,
    sessions: [] as Session[],
    opens: [] as Array<Record<string, string>>,
    accepted: [] as MuxStream[],
    behavior,
  };
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if (new URL(req.url ?? '/', 'https://x').pathname !== '/v1/agent') {
      refuseUpgrade(socket, 404, 'POSTERN_ERR_USAGE', `no such endpoint ${req.url}`);
      return;
    }
    acceptUpgrade(wss, req, socket, head).then(
      (ws) => {
        state.upgrades++;
        const session = new Session(wsTransport(ws), { role: 'server' });
        state.sessions.push(session);
        session.on('open', (incoming) => {
          state.opens.push({ ...incoming.metadata });
          void state.behavior(incoming, session);
        });
      },
      () => socket.destroy(),
    );
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `wss://localhost:${port}`,
    get upgrades() {
      return state.upgrades;
    },
    get sessions() {
      return state.sessions;
    },
    get opens() {
      return state.opens;
    },
    get accepted() {
      return state.accepted;
    },
    get behavior() {
      return state.behavior;
    },
    set behavior(b: OpenBehavior) {
      state.behavior = b;
    },
    async close() {
      for (const s of state.sessions) s.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface ConnectorSideOptions {
  /** The certificate that terminates inner TLS (a connector's, or the relay's for the malicious case). */
  tls: TlsMaterial;
  /** Status of the inner response (default OK) and its message. */
  status?: number;
  message?: string;
  /** After status OK: what to do with the inner TLS socket (default: echo, ending after the agent ends). */
  serve?: (socket: TLSSocket, target: string) => void;
  /** Accepted streams are pushed here. */
  accepted?: MuxStream[];
}

/**
 * The connector's side played by the fake: accept the open, run the connector's own inner TLS
 * server, read the inner request, answer, then serve.
 */
export function connectorSide(o: ConnectorSideOptions): OpenBehavior {
  return async (incoming) => {
    // As the relay does: the stream's correlation id in the OPEN_RESULT metadata.
    const stream = incoming.accept({ 'correlation-id': `corr-${incoming.id}` });
    o.accepted?.push(stream);
    // The real connector's inner TLS server: a refused agent gets RESET INNER_TLS_FAILED with
    // the reason, and a clean close ends with FIN both ways.
    let socket: TLSSocket;
    try {
      socket = (await acceptInnerTls(stream, serverTlsOptions(o.tls), { timeoutMs: 10_000, lingerMs: 10_000 })).tls;
    } catch {
      return;
    }
    socket.on('error', () => socket.destroy());
    let request: { target: string };
    try {
      request = await readMessage(socket, decodeInnerRequest, { timeoutMs: 10_000, what: 'inner request' });
    } catch {
      socket.destroy();
      return;
    }
    const status = o.status ?? OpenResult.OK;
    socket.write(encodeInnerResponse({ status, message: o.message ?? '' }));
    if (status !== OpenResult.OK) {
      socket.end();
      return;
    }
    (socket as { readableFlowing: boolean | null }).readableFlowing = null;
    if (o.serve) o.serve(socket, request.target);
    else socket.pipe(socket);
  };
}
