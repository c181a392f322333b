import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { isPosternError } from '../src/errors.js';
import type { Identity, IdentityExpectation } from '../src/identity/index.js';
import { StreamError, type MuxStream } from '../src/mux/index.js';
import { readMessage } from '../src/net/read-message.js';
import { connectTlsOverDuplex, mapTlsError, peerIdentity } from '../src/pki/index.js';
import { decodeInnerResponse, encodeInnerRequest } from '../src/protocol/inner.js';
import { OpenResult, describeOpenResult } from '../src/protocol/reasons.js';
import { AgentDialError, AgentError, type DialStage } from './errors.js';
import { lingerOnCleanClose } from './linger.js';
import type { RelayConnection } from './relay-session.js';

export interface InnerDialRequest {
  connector: string;
  /** Canonical `host:port`: sent to the relay in the open and to the connector inside inner TLS. */
  target: string;
}

export interface InnerDialOptions {
  /** Inner TLS client options requiring exactly this connector's SPIFFE ID. */
  tls: ConnectionOptions;
  /** The same expectation, to read the connector's identity for the evidence. */
  expect: IdentityExpectation;
  handshakeTimeoutMs: number;
  /** performance.now() by which the dial must be done. */
  deadline: number;
  /** Aborted on the dial deadline or by the caller; its reason is what the dial rejects with. */
  signal: AbortSignal;
  /** Updated as the dial moves on, so a timeout can say where it was stuck. */
  progress: { stage: DialStage };
}

export interface InnerDialResult {
  /** The inner TLS session: bytes written here reach the target, decrypted only by the connector. */
  socket: TLSSocket;
  connectorIdentity: Identity;
  tlsVersion: string;
  cipher: string;
  /** The relay's id for this stream (OPEN_RESULT metadata), found in the relay's and the connector's audit lines. */
  correlationId: string | undefined;
}

/**
 * One stream on an established relay session, up to the connector's "connected": open with
 * `{connector, target}` metadata, inner TLS 1.3 requiring the connector's SPIFFE ID, the inner
 * request, the connector's status. Every failure becomes an AgentDialError with the most precise
 * code known and the stream is reset.
 */
export async function dialOnSession(conn: RelayConnection, req: InnerDialRequest, o: InnerDialOptions): Promise<InnerDialResult> {
  o.progress.stage = 'open';
  // Held from the open on, then by the stream until it closes (see RelayConnection.hold).
  let release: (() => void) | undefined = conn.hold();
  let stream: MuxStream;
  let opened: Promise<MuxStream>;
  try {
    ({ stream, opened } = conn.session.openStream({ connector: req.connector, target: req.target }, { signal: o.signal }));
  } catch (err) {
    release();
    if (o.signal.aborted) throw o.signal.reason;
    throw dialError(err, 'open', req);
  }

  let resetBy: StreamError | undefined;
  const onStreamError = (err: Error): void => {
    if (err instanceof StreamError && err.remote) resetBy ??= err;
  };
  const onAbort = (): void => {
    stream.destroy();
  };
  stream.on('error', onStreamError);
  stream.once('close', () => {
    release?.();
    release = undefined;
  });
  o.signal.addEventListener('abort', onAbort, { once: true });

  // The inner handshake starts with the open: the ClientHello travels as early data right
  // behind the OPEN (protocol.md §4), so the connector answers it as it accepts the stream.
  // Nothing but the ClientHello goes before the connector is verified: the inner request waits
  // for the handshake and the identity check below.
  const handshake = connectTlsOverDuplex(stream, o.tls, { timeoutMs: o.handshakeTimeoutMs, timerStartsWith: opened });
  // Settled below; a refused open fails the handshake too, and the open's error is the one to report.
  handshake.catch(() => {});
  let stage: DialStage = 'open';
  try {
    await opened;
    stage = 'inner-tls';
    o.progress.stage = stage;
    const socket = await handshake;
    stage = 'inner-response';
    o.progress.stage = stage;
    const connectorIdentity = peerIdentity(socket, o.expect);
    socket.write(encodeInnerRequest({ target: req.target }));
    const response = await readMessage(socket, decodeInnerResponse, {
      timeoutMs: Math.max(1, o.deadline - performance.now()),
      what: `inner response from connector "${req.connector}"`,
    });
    if (response.status !== OpenResult.OK) {
      const info = describeOpenResult(response.status);
      throw new AgentDialError(info.code, 'inner-response', `connector "${req.connector}" could not reach ${req.target}: ${response.message || info.text} (${info.name})`, {
        details: { connector: req.connector, target: req.target, result: response.status },
      });
    }
    lingerOnCleanClose(stream, o.handshakeTimeoutMs);
    // readMessage leaves the socket explicitly paused, and a paused stream ignores a later
    // 'data' listener; back to "no mode chosen" so data, pipe and read() all work as on a fresh socket.
    (socket as { readableFlowing: boolean | null }).readableFlowing = null;
    bindRef(socket, conn, () => release, (r) => {
      release = r;
    });
    return {
      socket,
      connectorIdentity,
      tlsVersion: socket.getProtocol() ?? 'unknown',
      cipher: socket.getCipher()?.standardName ?? 'unknown',
      correlationId: stream.resultMetadata['correlation-id'],
    };
  } catch (err) {
    stream.destroy();
    if (o.signal.aborted) throw o.signal.reason;
    if (resetBy) throw dialError(resetBy, stage, req);
    throw dialError(err, stage, req);
  } finally {
    o.signal.removeEventListener('abort', onAbort);
    stream.off('error', onStreamError);
  }
}

/**
 * `socket.ref()/unref()` with net.Socket's meaning: an unref'd inner socket no longer keeps the
 * process alive. The inner socket has no OS handle of its own (it runs over a mux stream), so
 * the relay session's TCP socket is ref'd while any stream on it holds it.
 */
function bindRef(socket: TLSSocket, conn: RelayConnection, get: () => (() => void) | undefined, set: (r: (() => void) | undefined) => void): void {
  socket.ref = function ref(this: TLSSocket) {
    if (get() === undefined && !socket.destroyed) set(conn.hold());
    return this;
  };
  socket.unref = function unref(this: TLSSocket) {
    get()?.();
    set(undefined);
    return this;
  };
}

/** A failure at `stage`, as an AgentDialError naming connector and target, its code kept. */
export function dialError(err: unknown, stage: DialStage, req: InnerDialRequest): AgentError {
  if (err instanceof AgentDialError || isPosternError(err, 'POSTERN_ERR_AGENT_CLOSED')) return err as AgentError;
  const details = { connector: req.connector, target: req.target };
  const where = `connector "${req.connector}" target ${req.target}`;
  if (err instanceof StreamError && err.remote) {
    return new AgentDialError(err.code, stage, `${where}: ${err.message}`, { cause: err, details: { ...details, resetCode: err.resetCode } });
  }
  if (isPosternError(err)) {
    const prefix = stage === 'open' ? `relay refused ${where}` : stage === 'session' ? `cannot reach the relay for ${where}` : `${where}: inner TLS`;
    return new AgentDialError(err.code, stage, `${prefix}: ${err.message}`, { cause: err, details: { ...details, ...err.details } });
  }
  if (stage === 'inner-tls') {
    const mapped = mapTlsError(err);
    return new AgentDialError(mapped.code, stage, `${where}: inner TLS: ${mapped.message}`, { cause: err, details });
  }
  const message = (err as Error)?.message ?? String(err);
  const code = stage === 'inner-response' ? 'POSTERN_ERR_INNER_CLOSED' : stage === 'session' ? 'POSTERN_ERR_WS_CONNECT' : 'POSTERN_ERR_INTERNAL';
  return new AgentDialError(code, stage, `${where}: ${message}`, { cause: err, details });
}

/** Retrying on a new session is safe when the open was refused before any connector saw it. */
export function retryOnNewSession(err: unknown): boolean {
  return (
    err instanceof AgentDialError &&
    err.stage === 'open' &&
    (err.code === 'POSTERN_ERR_OPEN_GOING_AWAY' || err.code === 'POSTERN_ERR_STREAM_IDS_EXHAUSTED' || err.code === 'POSTERN_ERR_SESSION_CLOSED')
  );
}
