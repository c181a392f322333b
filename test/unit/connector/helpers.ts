import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { AuditLog } from '../../../src/audit/audit-log.js';
import type { AuditEvent } from '../../../src/audit/events.js';
import { identityFromCertificate } from '../../../src/identity/index.js';
import { createLogger, type Logger } from '../../../src/log.js';
import { Session, type SessionOptions } from '../../../src/mux/index.js';
import { acceptUpgrade, createWebSocketServer, refuseUpgrade, wsTransport } from '../../../src/mux/ws-transport.js';
import { readMessage } from '../../../src/net/read-message.js';
import { clientTlsOptions, connectTlsOverDuplex, loadTlsMaterial, serverTlsOptions, type TlsMaterial } from '../../../src/pki/index.js';
import { decodeInnerResponse, encodeInnerRequest, type InnerResponse } from '../../../src/protocol/inner.js';
import type { MuxStream } from '../../../src/mux/index.js';
import type { TestPki } from '../../helpers/pki.js';

/** A bounded wait for something event-driven; the bound only turns a hang into a clear failure. */
const WAIT_MS = 20_000;

type Waiter<T> = { match: (item: T) => boolean; resolve: (item: T) => void };

/** Items pushed by the code under test, awaited by predicate (already seen or future). */
export class Recorder<T> {
  readonly items: T[] = [];
  private readonly waiters = new Set<Waiter<T>>();

  push(item: T): void {
    this.items.push(item);
    for (const w of this.waiters) {
      if (w.match(item)) {
        this.waiters.delete(w);
        w.resolve(item);
      }
    }
  }

  /** The `nth` (1-based) item matching, counting those already seen. */
  waitFor(match: (item: T) => boolean, nth = 1, what = 'a matching item'): Promise<T> {
    let seen = 0;
    for (const item of this.items) if (match(item) && ++seen === nth) return Promise.resolve(item);
    return new Promise((resolve, reject) => {
      let count = seen;
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`no ${what} within ${WAIT_MS} ms; got:\n${this.items.map((i) => JSON.stringify(i)).join('\n')}`));
      }, WAIT_MS);
      const waiter: Waiter<T> = {
        match: (item) => match(item) && ++count === nth,
        resolve: (item) => {
          clearTimeout(timer);
          resolve(item);
        },
      };
      this.waiters.add(waiter);
    });
  }

  count(match: (item: T) => boolean): number {
    return this.items.filter(match).length;
  }
}

export type LogLine = Record<string, unknown> & { event?: string };

/** A JSON logger whose lines tests can await by `event`. */
export function captureLogger(level = 'debug'): { logger: Logger; lines: Recorder<LogLine> } {
  const lines = new Recorder<LogLine>();
  const logger = createLogger({ name: 'connector', level, destination: { write: (line: string) => lines.push(JSON.parse(line) as LogLine) } });
  return { logger, lines };
}

export function captureAudit(): { audit: AuditLog; events: Recorder<AuditEvent> } {
  const events = new Recorder<AuditEvent>();
  return { audit: { emit: (event) => events.push(event) }, events };
}

/** A TCP target on 127.0.0.1 that counts the connections it accepted. */
export async function tcpTarget(onSocket: (s: Socket) => void): Promise<{ port: number; accepted: () => number; close(): Promise<void> }> {
  let accepted = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    onSocket(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    accepted: () => accepted,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** Everything `stream` sends until it ends (resumed: readMessage leaves it paused). */
export function readAll(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.resume();
  });
}

/** A refused agent reads the connector's goodbye to its end, then closes its side too. */
export async function closeRefused(tls: Duplex): Promise<void> {
  await readAll(tls);
  tls.end();
}

export interface FakeRelay {
  url: string;
  /** Tunnel sessions in the order they were accepted. */
  sessions: Recorder<Session>;
  /** Upgrade requests seen (accepted or refused), with the connector identity presented. */
  upgrades: Array<{ path: string | undefined; peer: string | undefined; refused: boolean }>;
  /** Refuse the next `n` upgrades with HTTP 503 (a relay that is draining). */
  refuseNext(n: number): void;
  close(): Promise<void>;
}

/**
 * The relay side of tunnels, real enough for the connector: TLS 1.3 with client certificates on
 * 127.0.0.1, the WebSocket upgrade, a server-role mux session per tunnel. Tests open streams on
 * those sessions as the relay would and play the agent over them.
 */
export async function startFakeRelay(pki: TestPki, sessionOptions: Partial<SessionOptions> = {}): Promise<FakeRelay> {
  const cert = pki.files('relay', 'relay-1');
  const material = loadTlsMaterial({ cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl });
  const wss = createWebSocketServer({ maxPayload: 1 << 20 });
  const sessions = new Recorder<Session>();
  const live = new Set<Session>();
  const sockets = new Set<Socket>();
  const upgrades: FakeRelay['upgrades'] = [];
  let refuse = 0;
  const server: HttpsServer = createHttpsServer(serverTlsOptions(material));
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const raw = (req.socket as TLSSocket).getPeerCertificate().raw;
    const peer = raw ? identityFromCertificate(raw, { trustDomain: pki.trustDomain, presentedAs: 'connector-client' }).uri : undefined;
    const refused = refuse > 0;
    upgrades.push({ path: req.url, peer, refused });
    if (refused) {
      refuse--;
      refuseUpgrade(socket, 503, 'POSTERN_ERR_OPEN_GOING_AWAY', 'this relay is draining: use another relay');
      return;
    }
    acceptUpgrade(wss, req, socket, head).then((ws) => {
      const session = new Session(wsTransport(ws), { role: 'server', ...sessionOptions });
      live.add(session);
      session.once('close', () => live.delete(session));
      sessions.push(session);
    }, () => socket.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `wss://localhost:${port}`,
    sessions,
    upgrades,
    refuseNext(n) {
      refuse = n;
    },
    async close() {
      for (const s of live) s.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

export interface AgentOpen {
  stream: MuxStream;
  tls: TLSSocket;
  response: InnerResponse;
}

/** Plays the relay (open with metadata) and then the agent (inner TLS, inner request, inner response). */
export async function openAsAgent(
  session: Session,
  agent: TlsMaterial,
  o: { trustDomain: string; target: string; principal: string; correlationId?: string; innerTarget?: string },
): Promise<AgentOpen> {
  const stream = await session.open({ target: o.target, principal: o.principal, 'correlation-id': o.correlationId ?? 'cid-1' });
  const tls = await connectTlsOverDuplex(
    stream,
    clientTlsOptions(agent, { trustDomain: o.trustDomain, presentedAs: 'connector-inner-server', org: 'st-mary', name: 'hq' }),
    { timeoutMs: WAIT_MS },
  );
  tls.write(encodeInnerRequest({ target: o.innerTarget ?? o.target }));
  const response = await readMessage(tls, decodeInnerResponse, { timeoutMs: WAIT_MS, what: 'inner response' });
  return { stream, tls, response };
}

export function agentMaterial(pki: TestPki, files: { cert: string; key: string }, crl: string | string[] = pki.crl): TlsMaterial {
  return loadTlsMaterial({ cert: files.cert, key: files.key, ca: pki.ca, crl });
}
