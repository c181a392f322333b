import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Component name: relay, connector, agent, pki… */
  name: string;
  /** 'json' (default) or 'pretty' (for a terminal). */
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
  if (options.destination) return pino(base, options.destination);
  if (options.format === 'pretty') {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { destination: 2 } } });
  }
  // stderr so that commands whose stdout is data (pki inspect --json, bundle) stay clean.
  return pino(base, pino.destination({ fd: 2, sync: false }));
}

/** A logger that drops everything: for library users who pass none, and for tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
