import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';
import { Writable } from 'node:stream';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Component name: relay, connector, agent, pki… */
  name: string;
  /** 'json' (default) or 'pretty' (for a terminal; scrubbed as JSON first, then formatted). */
  format?: 'json' | 'pretty';
  destination?: DestinationStream;
}

/** Keys that must never reach a log line, wherever they appear in an object. */
const REDACT_PATHS = [
  'key', '*.key', 'privateKey', '*.privateKey', 'password', '*.password', 'token', '*.token',
  'authorization', '*.authorization', 'headers.authorization', 'headers["proxy-authorization"]',
  'proxyAuthorization', '*.proxyAuthorization',
];

export function createLogger(options: LogOptions): Logger {
  const base = {
    name: options.name,
    level: options.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  if (options.format === 'pretty') {
    // In-process (not a transport worker) so that the scrubbing stream sees every line first.
    const to = options.destination;
    const out = to === undefined ? pretty({ destination: 2, sync: true }) : pretty({ destination: toWritable(to), sync: true, colorize: false });
    return pino(base, scrubbing(out));
  }
  if (options.destination) return pino(base, scrubbing(options.destination));
  // stderr so that commands whose stdout is data (pki inspect --json, bundle) stay clean.
  const destination = pino.destination({ fd: 2, sync: false });
  return pino(base, { ...scrubbing(destination), flush: (cb?: (err?: Error) => void) => destination.flush(cb), flushSync: () => destination.flushSync() } as DestinationStream);
}

/** pino-pretty pipes into a real stream; a destination may be a bare `{ write }`. */
function toWritable(destination: DestinationStream): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      destination.write(chunk.toString('utf8'));
      callback();
    },
  });
}

/**
 * Redaction by key path misses a secret under another name, in a message or in an error text:
 * every serialized line also goes through scrubString. The patterns never cross a JSON string
 * boundary, so a JSON line stays valid.
 */
function scrubbing(destination: { write(line: string): unknown }): DestinationStream {
  return { write: (line: string) => void destination.write(scrubString(line)) };
}

/** A PEM private key block; one cut short ends at the end of its JSON string (escapes are taken whole). */
const PEM_PRIVATE_KEY = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(?:(?:[^"\\]|\\.)*?-----END \1PRIVATE KEY-----|(?:[^"\\]|\\.)*)/g;
/** The password of a URL's userinfo: http://user:password@proxy:3128 (a proxy URL from config or HTTPS_PROXY). */
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^\s/?#@:"\\]*):[^\s/?#@"\\]*@/gi;
/** Credentials of an HTTP authentication scheme, scrubbed from lines that mention (Proxy-)Authorization. */
const AUTH_CREDENTIALS = /\b(Basic|Bearer|Digest|Negotiate|NTLM)\s+[A-Za-z0-9+/=._~-]+/gi;
const MENTIONS_AUTHORIZATION = /authorization/i;
const MAY_HOLD_SECRET = /PRIVATE KEY|:\/\/[^\s/]*@|authorization/i;

/** Text with private keys, URL passwords and authorization credentials replaced. */
export function scrubString(text: string): string {
  if (!MAY_HOLD_SECRET.test(text)) return text;
  const scrubbed = text.replace(PEM_PRIVATE_KEY, '[redacted private key]').replace(URL_PASSWORD, '$1:[redacted]@');
  return MENTIONS_AUTHORIZATION.test(text) ? scrubbed.replace(AUTH_CREDENTIALS, '$1 [redacted]') : scrubbed;
}

/** A logger that drops everything: for library users who pass none, and for tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
