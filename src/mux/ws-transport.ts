/**
 * The WebSocket adapter of the mux: the only file that imports `ws` (test/unit/arch.test.ts).
 *
 * One Postern frame travels as one binary WebSocket message over TLS 1.3. Both ends turn
 * permessage-deflate off (CPU, and compression under encryption is a side channel), cap a
 * message at the frame cap (`maxPayload`), bound the handshake in time and always handle
 * `'error'` (an unhandled one kills the process).
 */
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import WebSocket, { WebSocketServer, type ClientOptions, type RawData, type ServerOptions } from 'ws';
import { ERROR_CATALOGUE, PosternError, isPosternError, type ErrorCode, type PosternErrorOptions } from '../errors.js';
import { connectThroughProxy, type HttpProxy } from '../net/http-proxy.js';
import { SUBPROTOCOL } from '../protocol/frames.js';
import type { FrameTransport, FrameTransportHandlers } from './transport.js';

export type { WebSocket, WebSocketServer };

/** The versioned WebSocket subprotocol (defined with the wire format); a peer that does not offer it is refused. */
export { SUBPROTOCOL };

/** Errors of the WebSocket transport (section "Transport" of docs/errors.md). */
export class TransportError extends PosternError {}

// ---------------------------------------------------------------------------------------
// The frame transport over an open WebSocket
// ---------------------------------------------------------------------------------------

export interface WsTransportOptions {
  /** Bytes queued in the socket above which the sender should stop sending DATA. */
  highWaterMark?: number;
  /** `drain` fires when the queued bytes fall back to this; must stay below `highWaterMark`. */
  lowWaterMark?: number;
}

export const WS_TRANSPORT_DEFAULTS: Readonly<Required<WsTransportOptions>> = Object.freeze({
  highWaterMark: 1024 * 1024,
  lowWaterMark: 256 * 1024,
});

/** A FrameTransport over `ws`, exposing its water marks so the session can use the same figures. */
export interface WsFrameTransport extends FrameTransport {
  readonly highWaterMark: number;
  readonly lowWaterMark: number;
}

const SEND_OPTIONS = Object.freeze({ binary: true, compress: false });

/** Close codes of RFC 6455 §7.4.1, for messages that name them. */
const CLOSE_CODE_NAMES: Readonly<Record<number, string>> = {
  1000: 'normal closure',
  1001: 'going away',
  1002: 'protocol error',
  1003: 'unsupported data',
  1005: 'no status',
  1006: 'abnormal closure',
  1007: 'invalid payload data',
  1008: 'policy violation',
  1009: 'message too big',
  1010: 'mandatory extension',
  1011: 'internal error',
  1012: 'service restart',
  1013: 'try again later',
  1015: 'TLS handshake failure',
};

/** Longest close reason a close frame can carry (125 bytes minus the 2-byte code). */
const MAX_CLOSE_REASON_BYTES = 123;

/**
 * Adapt an OPEN WebSocket to the session's FrameTransport. The WebSocket is paused until
 * `setHandlers` runs, so no message can be emitted (and lost) before the session listens;
 * `connectWebSocket` and `acceptUpgrade` hand it over already paused for the same reason.
 *
 * Backpressure: every send carries a write callback. Once a send leaves more than
 * `lowWaterMark` bytes queued, `drain` fires as soon as the queue falls back to
 * `lowWaterMark` (the socket keeps busy while the session refills it); once a send leaves
 * any byte queued, `drain` fires again when the queue is empty. A session that pauses at any
 * mark whatsoever, even one below `lowWaterMark`, is therefore always woken up.
 */
export function wsTransport(ws: WebSocket, o: WsTransportOptions = {}): WsFrameTransport {
  const highWaterMark = o.highWaterMark ?? WS_TRANSPORT_DEFAULTS.highWaterMark;
  const lowWaterMark = o.lowWaterMark ?? WS_TRANSPORT_DEFAULTS.lowWaterMark;
  assertNonNegativeInteger('highWaterMark', highWaterMark);
  assertNonNegativeInteger('lowWaterMark', lowWaterMark);
  if (lowWaterMark >= highWaterMark) {
    throw new PosternError(
      'POSTERN_ERR_CONFIG_INVALID',
      `wsTransport: field "lowWaterMark" (${lowWaterMark}) must be below "highWaterMark" (${highWaterMark})`,
      { details: { field: 'lowWaterMark', lowWaterMark, highWaterMark } },
    );
  }
  if (ws.readyState !== WebSocket.OPEN) {
    throw new TransportError(
      'POSTERN_ERR_WS_CLOSED',
      `wsTransport needs an open WebSocket; this one is in readyState ${ws.readyState}`,
      { details: { readyState: ws.readyState } },
    );
  }

  ws.binaryType = 'nodebuffer';
  ws.pause();

  let handlers: FrameTransportHandlers | undefined;
  /** Set once the session has been told the transport is gone (or will be, see `finish`). */
  let finished = false;
  /** The close that happened before `setHandlers`, delivered when the handlers arrive. */
  let earlyClose: { err: Error | undefined } | undefined;
  let localClose = false;
  let destroyed: { err: Error | undefined } | undefined;
  /** A send left more than lowWaterMark queued: drain is due when it falls back to it. */
  let aboveLow = false;
  /** A send left bytes queued: drain is due when the queue is empty. */
  let queued = false;

  const finish = (err: Error | undefined): void => {
    if (finished) return;
    finished = true;
    if (handlers) handlers.close(err);
    else earlyClose = { err };
  };

  // A protocol failure on our side: tell the peer why, and the session at once.
  const fail = (err: TransportError, closeCode: number, reason: string): void => {
    if (ws.readyState === WebSocket.OPEN) ws.close(closeCode, reason);
    finish(err);
  };

  const onWritten = (): void => {
    if (finished) return;
    const buffered = ws.bufferedAmount;
    const dueLow = aboveLow && buffered <= lowWaterMark;
    const dueEmpty = queued && buffered === 0;
    if (!dueLow && !dueEmpty) return;
    if (buffered <= lowWaterMark) aboveLow = false;
    if (buffered === 0) queued = false;
    handlers?.drain();
  };

  const onMessage = (data: RawData, isBinary: boolean): void => {
    if (finished) return;
    if (!isBinary) {
      fail(
        new TransportError(
          'POSTERN_ERR_WS_TEXT_MESSAGE',
          'the peer sent a text WebSocket message; Postern frames travel only in binary messages',
        ),
        1003,
        'binary messages only',
      );
      return;
    }
    // binaryType 'nodebuffer': a message is one Buffer, fragments already joined by ws.
    // Listened to only once handlers exist (setHandlers).
    handlers!.frame(data as Buffer);
  };

  ws.on('error', (err: Error) => finish(fromReceiverError(err)));
  ws.on('close', (code: number, reason: Buffer) => {
    if (destroyed) finish(destroyed.err);
    else if (code === 1000 || code === 1005 || (localClose && code !== 1006)) finish(undefined);
    else finish(closedError(code, reason.toString('utf8')));
  });

  return {
    highWaterMark,
    lowWaterMark,
    get bufferedAmount(): number {
      return ws.bufferedAmount;
    },
    send(frame: Buffer): void {
      ws.send(frame, SEND_OPTIONS, onWritten);
      const buffered = ws.bufferedAmount;
      if (buffered > 0) {
        queued = true;
        if (buffered > lowWaterMark) aboveLow = true;
      }
    },
    setHandlers(h: FrameTransportHandlers): void {
      if (handlers) throw new PosternError('POSTERN_ERR_INTERNAL', 'wsTransport.setHandlers was called twice');
      handlers = h;
      ws.on('message', onMessage);
      if (earlyClose) {
        const { err } = earlyClose;
        // Deferred: the session is still inside its constructor.
        process.nextTick(() => h.close(err));
        return;
      }
      ws.resume();
    },
    close(code = 1000, reason = ''): void {
      localClose = true;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(code, clampReason(reason));
    },
    destroy(err?: Error): void {
      // The close handler runs from ws's 'close' event, never re-entrantly inside destroy().
      destroyed ??= { err };
      ws.terminate();
    },
  };
}

function clampReason(reason: string): string {
  const bytes = Buffer.from(reason, 'utf8');
  if (bytes.length <= MAX_CLOSE_REASON_BYTES) return reason;
  // Cut on a character boundary so the peer's UTF-8 validation accepts it.
  let end = MAX_CLOSE_REASON_BYTES;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

function closedError(code: number, reason: string): TransportError {
  const name = CLOSE_CODE_NAMES[code] ?? (code >= 4000 ? 'application code' : 'unknown code');
  const message =
    code === 1006
      ? 'the connection was lost without a WebSocket close (1006: reset, timeout or peer crash)'
      : `the peer closed the WebSocket with ${code} (${name})${reason ? `: ${reason}` : ''}`;
  return new TransportError('POSTERN_ERR_WS_CLOSED', message, { details: { closeCode: code, reason } });
}

/** An error ws's receiver raised about what the peer sent; ws has already sent a close. */
function fromReceiverError(err: Error): TransportError {
  const wsCode = (err as { code?: unknown }).code;
  if (wsCode === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
    return new TransportError(
      'POSTERN_ERR_WS_MESSAGE_TOO_BIG',
      `the peer sent a WebSocket message larger than the frame cap (maxPayload): ${err.message}`,
      { cause: err, details: { wsCode } },
    );
  }
  return new TransportError('POSTERN_ERR_WS_PROTOCOL', `the peer broke the WebSocket protocol: ${err.message}`, {
    cause: err,
    details: { wsCode },
  });
}

// ---------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------

export interface WsServerOptions {
  /** Largest message accepted: the protocol's frame cap (header included). */
  maxPayload: number;
}

/**
 * Options for a `noServer` WebSocketServer: the caller owns the https.Server and its
 * 'upgrade' event, authenticates the client certificate there, then calls `acceptUpgrade`.
 */
export function wsServerOptions(o: WsServerOptions): ServerOptions {
  assertPositiveInteger('maxPayload', o.maxPayload);
  return {
    noServer: true,
    perMessageDeflate: false,
    maxPayload: o.maxPayload,
    // The relay keeps its own table of tunnels; a second set in ws would only duplicate it.
    clientTracking: false,
    // acceptUpgrade refuses a client that does not offer SUBPROTOCOL before ws sees it;
    // this is the second lock on the same door.
    handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  };
}

/** The WebSocketServer other modules use without importing `ws` themselves. */
export function createWebSocketServer(o: WsServerOptions): WebSocketServer {
  return new WebSocketServer(wsServerOptions(o));
}

/**
 * Server side: call from an https.Server's 'upgrade' listener AFTER the client certificate
 * has been authenticated (habit 7). Refuses a client that does not offer SUBPROTOCOL with
 * HTTP 400 and a JSON body, completes the upgrade otherwise, and resolves with the
 * WebSocket paused (see `wsTransport`). Rejects when ws refuses the request (bad upgrade
 * headers: ws answers 400 itself) or the socket goes away first.
 */
export function acceptUpgrade(wss: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const offered = parseProtocolHeader(req.headers['sec-websocket-protocol']);
    if (!offered.includes(SUBPROTOCOL)) {
      const message = `this server speaks WebSocket subprotocol "${SUBPROTOCOL}"; the client offered ${
        offered.length ? offered.map((p) => `"${p}"`).join(', ') : 'none'
      }`;
      refuseUpgrade(socket, 400, 'POSTERN_ERR_WS_SUBPROTOCOL', message);
      reject(new TransportError('POSTERN_ERR_WS_SUBPROTOCOL', message, { details: { offered } }));
      return;
    }
    if (socket.destroyed || !socket.readable || !socket.writable) {
      // The client left while the caller was authenticating (an await in its upgrade handler):
      // ws would drop the socket without calling back, and 'close' has already fired.
      socket.destroy();
      reject(new TransportError('POSTERN_ERR_WS_UPGRADE_INVALID', 'the client went away before the WebSocket upgrade could complete'));
      return;
    }
    let socketError: Error | undefined;
    const onError = (err: Error): void => {
      socketError = err;
    };
    const onClose = (): void => {
      socket.removeListener('error', onError);
      reject(
        new TransportError(
          'POSTERN_ERR_WS_UPGRADE_INVALID',
          socketError
            ? `the connection failed during the WebSocket upgrade: ${socketError.message}`
            : 'the WebSocket upgrade did not complete: invalid upgrade request (ws answered it with an HTTP error) or the client went away',
          { cause: socketError },
        ),
      );
    };
    socket.on('error', onError);
    socket.once('close', onClose);
    wss.handleUpgrade(req, socket, head, (ws) => {
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      ws.pause();
      (socket as Socket).setNoDelay?.(true);
      resolve(ws);
    });
  });
}

/** Most a refusal body may carry; it is read back by `connectWebSocket` within the same cap. */
const MAX_REFUSAL_BODY_BYTES = 4096;

/**
 * Refuse an upgrade before any WebSocket exists: write an HTTP response with a JSON body
 * `{code, message}` that `connectWebSocket` turns into a specific error, then close.
 */
export function refuseUpgrade(socket: Duplex, status: number, code: string, message: string): void {
  if (!Number.isInteger(status) || status < 400 || status > 599) {
    throw new PosternError('POSTERN_ERR_INTERNAL', `refuseUpgrade: status ${status} is not an HTTP error status (400-599)`);
  }
  // A client that resets meanwhile must not crash the process with an unhandled 'error'.
  socket.on('error', () => socket.destroy());
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  let body = JSON.stringify({ code, message });
  if (Buffer.byteLength(body) > MAX_REFUSAL_BODY_BYTES) {
    body = JSON.stringify({ code, message: message.slice(0, MAX_REFUSAL_BODY_BYTES / 4) });
  }
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
      'Connection: close\r\n' +
      'Content-Type: application/json\r\n' +
      'Cache-Control: no-store\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n` +
      body,
  );
}

function parseProtocolHeader(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const joined = Array.isArray(value) ? value.join(',') : value;
  return joined
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0)
    .slice(0, 16);
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

export interface ConnectWebSocketOptions {
  /** cert, key, ca, checkServerIdentity, servername…; TLS 1.3 is enforced on top. */
  tls: ConnectionOptions;
  /** Largest message accepted: the protocol's frame cap (header included). */
  maxPayload: number;
  /** Deadline for TCP connect + TLS handshake + HTTP upgrade together. */
  handshakeTimeoutMs: number;
  /**
   * Reach the server through this HTTP CONNECT proxy (src/net/proxy-config.ts decides whether
   * one applies). TLS then runs over the proxy's tunnel with the server's own name (SNI) and
   * checks; the CONNECT counts in handshakeTimeoutMs.
   */
  proxy?: HttpProxy;
  headers?: Record<string, string>;
}

export interface ConnectedWebSocket {
  /** Open and paused: wrap it with `wsTransport` (which resumes it once the session listens). */
  ws: WebSocket;
  socket: TLSSocket;
}

/**
 * Dial a `wss://` URL with a client certificate, offering SUBPROTOCOL only, without
 * permessage-deflate. Rejects with a specific error: the TLS failure mapped to its code, the
 * HTTP status and body of a refused upgrade (the server's own code when it sends one of
 * ours), a subprotocol mismatch, or the handshake deadline.
 */
export function connectWebSocket(url: string, o: ConnectWebSocketOptions): Promise<ConnectedWebSocket> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    return Promise.reject(
      new PosternError('POSTERN_ERR_CONFIG_INVALID', `connectWebSocket: "${url}" is not a valid URL`, { cause, details: { url } }),
    );
  }
  if (parsed.protocol !== 'wss:') {
    return Promise.reject(
      new PosternError('POSTERN_ERR_CONFIG_INVALID', `connectWebSocket: "${url}" must use wss:// (the tunnel always runs over mTLS)`, {
        details: { url },
      }),
    );
  }
  try {
    assertPositiveInteger('maxPayload', o.maxPayload);
    assertPositiveInteger('handshakeTimeoutMs', o.handshakeTimeoutMs);
  } catch (err) {
    return Promise.reject(err);
  }

  const proxy = o.proxy;
  if (!proxy) return openWebSocket(url, o, o.handshakeTimeoutMs, undefined);
  const started = performance.now();
  const host = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  return connectThroughProxy({ proxy, host, port: parsed.port === '' ? 443 : Number(parsed.port), timeoutMs: o.handshakeTimeoutMs }).then((tunnel) =>
    openWebSocket(url, o, Math.max(1, Math.ceil(o.handshakeTimeoutMs - (performance.now() - started))), { proxy, tunnel }),
  );
}

function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/** The WebSocket handshake, over a direct connection or over a proxy's tunnel, within `timeoutMs`. */
function openWebSocket(url: string, o: ConnectWebSocketOptions, timeoutMs: number, via: { proxy: HttpProxy; tunnel: Socket } | undefined): Promise<ConnectedWebSocket> {
  const parsed = new URL(url);
  return new Promise((resolve, reject) => {
    const where = via ? `${parsed.host} (through the HTTP proxy ${via.proxy.display})` : parsed.host;
    let settled = false;
    let socket: TLSSocket | undefined;

    const options: ClientOptions = {
      ...(o.tls as ClientOptions),
      minVersion: 'TLSv1.3',
      perMessageDeflate: false,
      maxPayload: o.maxPayload,
      // ws's own timeout is an idle timeout on the request; the timer below is the deadline.
      handshakeTimeout: timeoutMs,
      followRedirects: false,
      // An all-zero masking key: ws then sends the payload as it is instead of copying it
      // XOR-ed (RFC 6455 allows any key). Masking guards against a browser script steering the
      // bytes an intermediary sees in clear; here the client is ours, the frames travel inside
      // TLS, and the payload is inner-TLS ciphertext. It saves a copy of every byte sent.
      generateMask: zeroMask,
      ...(via ? { createConnection: overTunnel(via.tunnel) } : {}),
      ...(o.headers ? { headers: o.headers } : {}),
    };
    const ws = new WebSocket(url, SUBPROTOCOL, options);

    const settle = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        ws.terminate();
        via?.tunnel.destroy();
        reject(err);
        return;
      }
      resolve({ ws, socket: socket! });
    };

    const timer = setTimeout(() => {
      settle(
        new TransportError(
          'POSTERN_ERR_WS_HANDSHAKE_TIMEOUT',
          `no WebSocket connection to ${where} within handshakeTimeoutMs=${o.handshakeTimeoutMs} (${via ? 'proxy CONNECT, ' : ''}TCP connect, TLS handshake and upgrade together)`,
          { details: { url, handshakeTimeoutMs: o.handshakeTimeoutMs } },
        ),
      );
    }, timeoutMs);

    // Stays attached for the life of the WebSocket: an unhandled 'error' kills the process.
    ws.on('error', (err: Error) => settle(fromConnectError(err, where, via?.proxy)));
    ws.once('close', () => {
      settle(new TransportError('POSTERN_ERR_WS_CONNECT', `the connection to ${where} closed before the WebSocket opened`, { details: { url } }));
    });
    ws.once('upgrade', (res: IncomingMessage) => {
      socket = res.socket as TLSSocket;
    });
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      readBoundedBody(res, MAX_REFUSAL_BODY_BYTES, (text) => settle(refusedError(res.statusCode ?? 0, text, where)));
    });
    ws.once('open', () => {
      ws.pause();
      if (!socket) {
        settle(new PosternError('POSTERN_ERR_INTERNAL', 'ws opened without an upgrade response'));
        return;
      }
      socket.setNoDelay(true);
      settle(undefined);
    });
  });
}

/**
 * ws's `createConnection` over a proxy's tunnel: what ws's own tlsConnect does (servername from
 * the URL's host unless it is an IP literal), with the tunnel as the transport. The options are
 * the request's: the relay's host, CA, certificate and checkServerIdentity, never the proxy's.
 */
function overTunnel(tunnel: Socket): NonNullable<ClientOptions['createConnection']> {
  const create = (options: ConnectionOptions & { host?: string; path?: string }): TLSSocket => {
    const servername = options.servername ?? (options.host === undefined || isIP(options.host) !== 0 ? undefined : options.host);
    return tlsConnect({ ...options, path: undefined, socket: tunnel, ...(servername === undefined ? {} : { servername }) } as ConnectionOptions);
  };
  return create as unknown as NonNullable<ClientOptions['createConnection']>;
}

function readBoundedBody(res: IncomingMessage, max: number, done: (text: string) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let called = false;
  const finish = (): void => {
    if (called) return;
    called = true;
    res.removeAllListeners('data');
    done(Buffer.concat(chunks).toString('utf8'));
  };
  res.on('data', (chunk: Buffer) => {
    const room = max - size;
    chunks.push(chunk.subarray(0, room));
    size += Math.min(chunk.length, room);
    if (size >= max) finish();
  });
  res.once('end', finish);
  res.once('error', finish);
  res.once('close', finish);
}

function refusedError(status: number, text: string, where: string): PosternError {
  let remote: { code?: unknown; message?: unknown } | undefined;
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === 'object') remote = value as { code?: unknown; message?: unknown };
  } catch {
    remote = undefined;
  }
  const remoteCode = typeof remote?.code === 'string' ? remote.code : undefined;
  const remoteMessage = typeof remote?.message === 'string' ? remote.message : printable(text);
  const details = { status, remoteCode, remoteMessage };
  const prefix = `${where} refused the WebSocket upgrade with HTTP ${status}`;
  // The relay answers at the door with one of our codes (role, revoked certificate,
  // subprotocol…): surface that code so the caller can tell why.
  if (remoteCode !== undefined && isCatalogueCode(remoteCode)) {
    return new TransportError(remoteCode, `${prefix}: ${remoteMessage}`, { details });
  }
  return new TransportError(
    'POSTERN_ERR_WS_UPGRADE_REFUSED',
    `${prefix}${remoteCode ? ` ${remoteCode}` : ''}${remoteMessage ? `: ${remoteMessage}` : ''}`,
    { details },
  );
}

/** Control characters stripped and length capped: the text comes from the network. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, 512);
}

const UNKNOWN_ISSUER = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
]);
const UNTRUSTED = new Set(['CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'INVALID_CA', 'INVALID_PURPOSE', 'PATH_LENGTH_EXCEEDED']);
const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE', 'EADDRNOTAVAIL']);

/** Map what ws/tls/net raise while connecting to one of our codes. */
function fromConnectError(err: Error, where: string, proxy: HttpProxy | undefined): PosternError {
  if (isPosternError(err)) return err; // from a checkServerIdentity of ours
  const rawCode = (err as { code?: unknown }).code;
  const code = typeof rawCode === 'string' ? rawCode : undefined;
  const options = (details: Record<string, unknown> = {}): PosternErrorOptions => ({ cause: err, details: { ...details, nodeCode: code } });
  if (code !== undefined) {
    if (UNKNOWN_ISSUER.has(code) && proxy) {
      return new PosternError(
        'POSTERN_ERR_TLS_INTERCEPTED',
        `the server at ${where} presented a certificate from an issuer outside the trust bundle (${code}): the HTTP proxy is most likely a TLS-inspecting proxy that replaced the relay's certificate with its own; ask the network team to exempt the relay's host from TLS inspection (or, if the relay is reachable without the proxy, list it in proxy.noProxy / NO_PROXY)`,
        options({ proxy: proxy.display }),
      );
    }
    if (UNKNOWN_ISSUER.has(code)) {
      return new PosternError(
        'POSTERN_ERR_TLS_INTERCEPTED',
        `the server at ${where} presented a certificate from an issuer outside the trust bundle (${code}); a TLS-inspecting proxy is the likely cause, else the wrong CA bundle`,
        options(),
      );
    }
    if (UNTRUSTED.has(code)) {
      return new PosternError('POSTERN_ERR_TLS_CERT_UNTRUSTED', `the certificate of ${where} is not trusted (${code}): ${err.message}`, options());
    }
    if (EXPIRED.has(code)) {
      return new PosternError('POSTERN_ERR_TLS_CERT_EXPIRED', `the certificate of ${where} is outside its validity period (${code})`, options());
    }
    if (code === 'CERT_REVOKED') {
      return new PosternError('POSTERN_ERR_TLS_CERT_REVOKED', `the certificate of ${where} is revoked`, options());
    }
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      return new PosternError('POSTERN_ERR_ID_NAME_MISMATCH', `the certificate of ${where} does not name it: ${err.message}`, options());
    }
    if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') {
      return new PosternError('POSTERN_ERR_TLS_HANDSHAKE', `${where} requires a client certificate and none was sent`, options());
    }
    if (code.startsWith('ERR_SSL_') && code.includes('ALERT')) {
      return new PosternError('POSTERN_ERR_TLS_HANDSHAKE', `${where} aborted the TLS handshake (${code}): it refused our certificate or TLS 1.3`, options());
    }
    if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
      return new PosternError('POSTERN_ERR_TLS_HANDSHAKE', `TLS handshake with ${where} failed (${code}): ${err.message}`, options());
    }
    if (NETWORK.has(code)) {
      // In TLS 1.3 the server checks our certificate after the client's handshake is done, so a
      // refused certificate reaches us as a reset, without an alert we could read.
      const hint = code === 'ECONNRESET' ? '; if it persists, the relay may be refusing our certificate (revoked, expired, wrong role or CA): its handshake.refused log line names the reason' : '';
      return new TransportError('POSTERN_ERR_WS_CONNECT', `cannot connect to ${where} (${code}): ${err.message}${hint}`, options());
    }
  }
  if (err.message === 'Opening handshake has timed out') {
    return new TransportError('POSTERN_ERR_WS_HANDSHAKE_TIMEOUT', `the WebSocket handshake with ${where} stalled: ${err.message}`, options());
  }
  if (/subprotocol/i.test(err.message)) {
    return new TransportError(
      'POSTERN_ERR_WS_SUBPROTOCOL',
      `${where} did not accept WebSocket subprotocol "${SUBPROTOCOL}": ${err.message}`,
      options(),
    );
  }
  if (/^(Invalid|Server sent|Server indicated)/.test(err.message)) {
    return new TransportError('POSTERN_ERR_WS_UPGRADE_INVALID', `${where} answered the WebSocket upgrade wrongly: ${err.message}`, options());
  }
  return new TransportError('POSTERN_ERR_WS_CONNECT', `cannot open a WebSocket to ${where}: ${err.message}`, options());
}

function isCatalogueCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CATALOGUE, code);
}

function assertPositiveInteger(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new PosternError('POSTERN_ERR_CONFIG_INVALID', `field "${field}" must be a positive integer, got ${String(value)}`, {
      details: { field, value },
    });
  }
}

function assertNonNegativeInteger(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PosternError('POSTERN_ERR_CONFIG_INVALID', `field "${field}" must be a non-negative integer, got ${String(value)}`, {
      details: { field, value },
    });
  }
}
