/**
 * HTTP CONNECT client (RFC 9110 §9.3.6): the way out of a network whose only exit is a
 * corporate proxy. One request per connection; the answer's header is read within a size cap
 * and a deadline, its status line parsed strictly; a 2xx turns the connection into a raw tunnel
 * to the relay, and any byte the proxy sent after the header belongs to that tunnel.
 *
 * The password of the proxy URL is never put in a message, a detail or a log field: `display`
 * is the URL without it.
 */
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { ConfigError, ProxyError } from '../errors.js';

/** A parsed proxy URL. */
export interface HttpProxy {
  /** Host name or IP literal (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** Basic credentials from the URL's userinfo, percent-decoded. */
  readonly username?: string;
  readonly password?: string;
  /** `http://user@proxy.example:3128`: the URL as messages and logs show it, never with the password. */
  readonly display: string;
}

/** Largest CONNECT answer header read by default; a real one is a few hundred bytes. */
export const DEFAULT_MAX_PROXY_HEADER_BYTES = 16 * 1024;

/**
 * Parse a proxy URL (`http://user:pass@proxy.example:3128`). The scheme may be left out
 * (`proxy.example:3128`, as curl and many tools accept in HTTPS_PROXY); only `http` is
 * supported (TLS to the proxy itself is not). The port defaults to 80 as the http scheme says
 * (curl would assume 1080): write it. `where` names the source in errors (`config field
 * "proxy.url"`, `env HTTPS_PROXY`); errors never repeat the raw value, which may hold a password.
 */
export function parseProxyUrl(raw: string, where: string): HttpProxy {
  const text = raw.trim();
  const invalid = (why: string): ConfigError =>
    new ConfigError('POSTERN_ERR_CONFIG_INVALID', `${where}: ${why} (expected http://[user:password@]host:port)`, { details: { where } });
  if (text === '') throw invalid('the proxy URL is empty');
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw invalid('not a valid URL');
  }
  if (url.protocol !== 'http:') {
    throw invalid(`scheme "${url.protocol.slice(0, -1).slice(0, 16)}" is not supported: only http proxies (CONNECT over plain HTTP)`);
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    throw invalid('a proxy URL has no path, query or fragment');
  }
  if (url.hostname === '') throw invalid('no proxy host');
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? 80 : Number(url.port);
  if (url.username === '' && url.password !== '') throw invalid('a password without a user name');
  let credentials: { username: string; password: string } | undefined;
  try {
    // "http://user@proxy" is a user with an empty password, as curl sends it.
    if (url.username !== '') credentials = { username: decodeURIComponent(url.username), password: decodeURIComponent(url.password) };
  } catch {
    throw invalid('the user name or password holds an invalid percent-escape');
  }
  if (credentials?.username.includes(':')) throw invalid('the user name may not contain ":" (Basic authentication)');
  const userinfo = url.username === '' ? '' : `${url.username}@`;
  const hostPart = isIP(host) === 6 ? `[${host}]` : host;
  return Object.freeze({ host, port, ...credentials, display: `http://${userinfo}${hostPart}:${port}` });
}

// ---------------------------------------------------------------------------------------
// The answer to CONNECT: a pure, incremental parser
// ---------------------------------------------------------------------------------------

export interface ConnectResponse {
  /** 100-599. */
  statusCode: number;
  /** Printable, at most 128 characters: it comes from the network. */
  reason: string;
  /** Header fields in order, names lower-cased, values trimmed and printable. */
  headers: ReadonlyArray<readonly [string, string]>;
  /** Bytes of the status line and header, terminator included: what follows belongs to the tunnel. */
  headerBytes: number;
}

const TERMINATOR = Buffer.from('\r\n\r\n');
const VERSION_PREFIX = Buffer.from('HTTP/1.');
const STATUS_LINE = /^HTTP\/1\.[01] ([1-5]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function protocolError(why: string, details: Record<string, unknown> = {}): ProxyError {
  return new ProxyError('POSTERN_ERR_PROXY_PROTOCOL', why, { details });
}

/**
 * Parse the proxy's answer from the first bytes received. Returns undefined while the header
 * is incomplete (more bytes are needed), the parsed header once complete, and throws a
 * ProxyError POSTERN_ERR_PROXY_PROTOCOL when the bytes cannot be a valid HTTP/1.x answer or the
 * header would exceed `maxHeaderBytes`. Checks the version prefix as soon as it can, so a peer
 * that is not an HTTP proxy (a TLS server answers with a binary alert) fails on its first bytes.
 */
export function parseConnectResponse(buf: Buffer, maxHeaderBytes: number = DEFAULT_MAX_PROXY_HEADER_BYTES): ConnectResponse | undefined {
  const prefixLength = Math.min(buf.length, VERSION_PREFIX.length);
  if (!buf.subarray(0, prefixLength).equals(VERSION_PREFIX.subarray(0, prefixLength))) {
    throw protocolError(`the answer does not start with "HTTP/1." (first bytes: ${hexPreview(buf)}): the peer is not an HTTP proxy`);
  }
  const end = buf.subarray(0, maxHeaderBytes).indexOf(TERMINATOR);
  if (end < 0) {
    if (buf.length >= maxHeaderBytes) {
      throw protocolError(`the answer header exceeds ${maxHeaderBytes} bytes`, { maxHeaderBytes });
    }
    return undefined;
  }
  // latin1 maps each byte to one character, so the regexes see every byte as it is.
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const statusLine = lines[0]!;
  const status = STATUS_LINE.exec(statusLine);
  if (!status) throw protocolError(`malformed status line "${printable(statusLine, 64)}"`);
  const headers: Array<readonly [string, string]> = [];
  for (const line of lines.slice(1)) {
    // A bare CR or LF inside a line, obsolete line folding, or a field without a colon.
    const colon = line.indexOf(':');
    const name = line.slice(0, Math.max(colon, 0));
    const value = line.slice(colon + 1);
    if (colon <= 0 || !HEADER_NAME.test(name) || !HEADER_VALUE.test(value)) throw protocolError(`malformed header line "${printable(line, 64)}"`);
    headers.push([name.toLowerCase(), printable(value, 256)] as const);
  }
  return { statusCode: Number(status[1]), reason: printable(status[2] ?? '', 128), headers, headerBytes: end + TERMINATOR.length };
}

/** Control characters and non-ASCII replaced, length capped: the text comes from the network. */
function printable(text: string, max: number): string {
  return text.replace(/[^\x20-\x7e]+/g, ' ').trim().slice(0, max);
}

function hexPreview(buf: Buffer): string {
  return buf.subarray(0, 8).toString('hex').replace(/(..)/g, '$1 ').trim() || 'none';
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

export interface ProxyConnectOptions {
  proxy: HttpProxy;
  /** What CONNECT asks for: the relay's host (name or IP literal, IPv6 without brackets) and port. */
  host: string;
  port: number;
  /** Deadline for the TCP connection to the proxy and its whole answer header. */
  timeoutMs: number;
  /** Cap of the answer header; DEFAULT_MAX_PROXY_HEADER_BYTES by default. */
  maxHeaderBytes?: number;
}

/**
 * Open a TCP connection to the proxy, send one CONNECT request (with Basic credentials when
 * the proxy URL has a user name) and read the answer. Resolves with the socket once the proxy
 * answered 2xx: paused, TCP_NODELAY set, any bytes after the answer header put back so the next
 * reader (the TLS client) sees the tunnel intact. Rejects with a ProxyError:
 * POSTERN_ERR_PROXY_UNREACHABLE (connection failed or closed before an answer),
 * POSTERN_ERR_PROXY_TIMEOUT, POSTERN_ERR_PROXY_AUTH_FAILED (407),
 * POSTERN_ERR_PROXY_REFUSED (any other non-2xx), POSTERN_ERR_PROXY_PROTOCOL.
 */
export function connectThroughProxy(o: ProxyConnectOptions): Promise<Socket> {
  const maxHeaderBytes = o.maxHeaderBytes ?? DEFAULT_MAX_PROXY_HEADER_BYTES;
  for (const [field, value] of [['timeoutMs', o.timeoutMs], ['maxHeaderBytes', maxHeaderBytes], ['port', o.port]] as const) {
    if (!Number.isSafeInteger(value) || value <= 0) {
      return Promise.reject(new ConfigError('POSTERN_ERR_CONFIG_INVALID', `connectThroughProxy: field "${field}" must be a positive integer, got ${String(value)}`, { details: { field } }));
    }
  }
  const { proxy } = o;
  const authority = `${isIP(o.host) === 6 ? `[${o.host}]` : o.host}:${o.port}`;
  const details = { proxy: proxy.display, target: authority };

  return new Promise<Socket>((resolve, reject) => {
    const socket = netConnect({ host: proxy.host, port: proxy.port });
    socket.setNoDelay(true);
    let received: Buffer = Buffer.alloc(0);
    let answered = false;
    let done = false;

    const finish = (err: Error | undefined, rest?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      socket.off('connect', onConnect);
      if (err) {
        socket.destroy();
        reject(err);
        return;
      }
      socket.pause();
      if (rest && rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };

    const timer = setTimeout(() => {
      finish(
        new ProxyError(
          'POSTERN_ERR_PROXY_TIMEOUT',
          `the HTTP proxy ${proxy.display} did not ${answered ? 'finish' : socket.connecting ? 'accept the connection for' : 'answer'} the CONNECT to ${authority} within ${o.timeoutMs} ms`,
          { details: { ...details, timeoutMs: o.timeoutMs } },
        ),
      );
    }, o.timeoutMs);

    const onConnect = (): void => {
      const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
      if (proxy.username !== undefined) {
        const token = Buffer.from(`${proxy.username}:${proxy.password ?? ''}`, 'utf8').toString('base64');
        lines.push(`Proxy-Authorization: Basic ${token}`);
      }
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    };

    const onData = (chunk: Buffer): void => {
      answered = true;
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      let response: ConnectResponse | undefined;
      try {
        response = parseConnectResponse(received, maxHeaderBytes);
      } catch (err) {
        const e = err as ProxyError;
        finish(new ProxyError(e.code, `the HTTP proxy ${proxy.display} answered the CONNECT to ${authority} wrongly: ${e.message}`, { details: { ...details, ...e.details } }));
        return;
      }
      if (!response) return;
      const { statusCode, reason } = response;
      const status = `${statusCode}${reason ? ` ${reason}` : ''}`;
      if (statusCode >= 200 && statusCode < 300) {
        finish(undefined, received.subarray(response.headerBytes));
        return;
      }
      if (statusCode === 407) {
        const offered = response.headers.filter(([name]) => name === 'proxy-authenticate').map(([, value]) => value.split(/[\s,]/, 1)[0]!);
        const schemes = offered.length > 0 ? ` (it offers ${[...new Set(offered)].join(', ')})` : '';
        const why =
          proxy.username === undefined
            ? `requires authentication${schemes} and the proxy URL names no user: write it as http://user:password@${proxy.display.slice('http://'.length)}`
            : `refused the credentials of user "${proxy.username}"${schemes}: check the user name and password of the proxy URL`;
        finish(new ProxyError('POSTERN_ERR_PROXY_AUTH_FAILED', `the HTTP proxy ${proxy.display} ${why} (HTTP ${status})`, { details: { ...details, status: statusCode } }));
        return;
      }
      const hint = statusCode >= 100 && statusCode < 200 ? ': an interim answer to CONNECT is not supported' : statusCode === 403 || statusCode === 405 ? ': it does not allow a tunnel to that host or port' : statusCode === 502 || statusCode === 503 || statusCode === 504 ? ': it could not reach the relay' : '';
      finish(new ProxyError('POSTERN_ERR_PROXY_REFUSED', `the HTTP proxy ${proxy.display} refused the CONNECT to ${authority} with HTTP ${status}${hint}`, { details: { ...details, status: statusCode, reason } }));
    };

    const onError = (err: Error): void => {
      const code = (err as { code?: unknown }).code;
      finish(
        new ProxyError('POSTERN_ERR_PROXY_UNREACHABLE', `cannot reach the HTTP proxy ${proxy.display}${typeof code === 'string' ? ` (${code})` : ''}: ${err.message}`, {
          cause: err,
          details: { ...details, nodeCode: code },
        }),
      );
    };
    const onClose = (): void => {
      finish(
        answered
          ? new ProxyError('POSTERN_ERR_PROXY_PROTOCOL', `the HTTP proxy ${proxy.display} closed the connection in the middle of its answer to the CONNECT to ${authority}`, { details })
          : new ProxyError('POSTERN_ERR_PROXY_UNREACHABLE', `the HTTP proxy ${proxy.display} closed the connection without answering the CONNECT to ${authority}`, { details }),
      );
    };

    socket.once('connect', onConnect);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}
