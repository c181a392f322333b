import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ERROR_CATALOGUE } from '../errors.js';
import { describeOpenResult, OpenResult } from '../protocol/reasons.js';
import {
  CERTIFICATE_KINDS, DIRECTIONS, HANDSHAKE_PLACES, LIMIT_NAMES, LIMITS_OF, METRICS, OPEN_DURATION_BUCKETS, RELOAD_RESULTS, STREAM_RESULTS,
  type CertificateKind, type Component, type Direction, type HandshakePlace, type LimitName, type MetricKey, type ReloadResult,
  type StreamResult,
} from './definitions.js';

export interface MetricsOptions {
  /** Node's own metrics (CPU, memory, event loop, GC) too: on for a `postern` process, off for a library user. */
  defaultMetrics?: boolean;
}

/** What countBytes needs of a tunnel session; src/mux's Session fits. */
export interface ByteCountingSession {
  readonly stats: { readonly bytesIn: number; readonly bytesOut: number };
  readonly closed: boolean;
  once(event: 'close', listener: () => void): unknown;
}

/** What countLimits needs of a session: its `limit` event (src/mux's Session fits). */
export interface LimitingSession {
  on(event: 'limit', listener: (limit: LimitName) => void): unknown;
}

/** Gauges that read the process's own state at scrape time, so they can never drift. */
export interface GaugeSources {
  tunnelsUp?: () => number;
  agentSessions?: () => number;
  certificateExpiry?: () => Partial<Record<CertificateKind, Date>>;
}

/** Ends one open: counts it under `result` and, for `ok`, observes how long it took. Later calls are ignored. */
export type OpenOutcome = (result: StreamResult | number) => void;

/**
 * The metrics of one process, in a registry of its own (a test or `postern up` runs several
 * components in one process). Callers count with one call each; label values are checked
 * against the closed lists of definitions.ts, so a caller cannot add an unbounded one.
 */
export interface PosternMetrics {
  readonly component: Component;
  readonly registry: Registry;
  /** Content-Type of text(): the Prometheus text exposition format. */
  readonly contentType: string;
  text(): Promise<string>;
  /** Call when an open request arrives; call the result when it is decided. */
  startOpen(): OpenOutcome;
  /** postern_streams_open counts the stream until `spliced` settles; resolves as it does. */
  trackStream<T>(spliced: Promise<T>): Promise<T>;
  /**
   * Adds a tunnel session's DATA bytes to postern_stream_bytes_total, read live at each scrape:
   * `received` names the direction of the bytes it receives (the relay's agent sessions receive
   * `up`, so do the connector's tunnels). Forgotten once closed, its bytes kept.
   */
  countBytes(session: ByteCountingSession, received: Direction): void;
  handshakeFailure(place: HandshakePlace, code: string): void;
  limitHit(limit: LimitName): void;
  /** Counts every peer open a session refuses by one of its limits (maxStreams, …). */
  countLimits(session: LimitingSession): void;
  reconnect(): void;
  policyReload(result: ReloadResult): void;
  tlsReload(result: ReloadResult): void;
  readGauges(sources: GaugeSources): void;
}

const RESULTS = new Set<string>(STREAM_RESULTS);
const PLACES = new Set<string>(HANDSHAKE_PLACES);
const LIMITS = new Set<string>(LIMIT_NAMES);

/** The label value of an OPEN_RESULT number: its name in lower case, `unknown` if this version has none. */
export function streamResultOf(result: number): StreamResult {
  if (result === OpenResult.OK) return 'ok';
  const name = describeOpenResult(result).name.toLowerCase();
  return RESULTS.has(name) ? (name as StreamResult) : 'unknown';
}

export function createMetrics(component: Component, options: MetricsOptions = {}): PosternMetrics {
  const registry = new Registry();
  const registers = (key: MetricKey) => ((METRICS[key].components as readonly Component[]).includes(component) ? [registry] : []);
  const base = <K extends MetricKey>(key: K) => ({
    name: METRICS[key].name,
    help: METRICS[key].help,
    labelNames: METRICS[key].labels as readonly string[],
    registers: registers(key),
  });

  let sources: GaugeSources = {};
  const liveSessions = new Set<{ session: ByteCountingSession; received: Direction }>();
  const closedBytes: Record<Direction, number> = { up: 0, down: 0 };
  const reportedBytes: Record<Direction, number> = { up: 0, down: 0 };

  new Gauge({ ...base('tunnelsUp'), collect() { this.set(sources.tunnelsUp?.() ?? 0); } });
  new Gauge({ ...base('agentSessions'), collect() { this.set(sources.agentSessions?.() ?? 0); } });
  new Gauge({
    ...base('certificateExpiry'),
    collect() {
      this.reset();
      const expiry = sources.certificateExpiry?.() ?? {};
      for (const kind of CERTIFICATE_KINDS) {
        const date = expiry[kind];
        if (date) this.set({ kind }, Math.floor(date.getTime() / 1000));
      }
    },
  });
  const streamsOpen = new Gauge(base('streamsOpen'));
  const streamsTotal = new Counter(base('streamsTotal'));
  const streamBytes = new Counter({
    ...base('streamBytes'),
    // Sessions count their own bytes (src/mux stats) at no cost on the data path; a scrape adds what grew since the last one.
    collect() {
      const totals = { ...closedBytes };
      for (const { session, received } of liveSessions) addSession(totals, session, received);
      for (const direction of DIRECTIONS) {
        const grown = totals[direction] - reportedBytes[direction];
        if (grown > 0) this.inc({ direction }, grown);
        reportedBytes[direction] = totals[direction];
      }
    },
  });
  const openDuration = new Histogram({ ...base('openDuration'), buckets: [...OPEN_DURATION_BUCKETS] });
  const handshakeFailures = new Counter(base('handshakeFailures'));
  const reconnects = new Counter(base('reconnects'));
  const policyReloads = new Counter(base('policyReloads'));
  const tlsReloads = new Counter(base('tlsReloads'));
  const limitsHit = new Counter(base('limitsHit'));

  // Every value of a closed list reads 0 from the start, so a dashboard shows the series before the first event.
  for (const result of STREAM_RESULTS) streamsTotal.inc({ result }, 0);
  for (const direction of DIRECTIONS) streamBytes.inc({ direction }, 0);
  for (const result of RELOAD_RESULTS) {
    policyReloads.inc({ result }, 0);
    tlsReloads.inc({ result }, 0);
  }
  for (const limit of LIMITS_OF[component]) limitsHit.inc({ limit }, 0);

  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });

  return {
    component,
    registry,
    contentType: registry.contentType,
    text: () => registry.metrics(),
    startOpen() {
      const stopTimer = openDuration.startTimer();
      let decided = false;
      return (result) => {
        if (decided) return;
        decided = true;
        const name = typeof result === 'number' ? streamResultOf(result) : RESULTS.has(result) ? result : 'unknown';
        streamsTotal.inc({ result: name });
        if (name === 'ok') stopTimer();
      };
    },
    trackStream(spliced) {
      streamsOpen.inc();
      return spliced.finally(() => streamsOpen.dec());
    },
    countBytes(session, received) {
      if (session.closed) return addSession(closedBytes, session, received);
      const entry = { session, received };
      liveSessions.add(entry);
      session.once('close', () => {
        liveSessions.delete(entry);
        addSession(closedBytes, session, received);
      });
    },
    handshakeFailure(place, code) {
      handshakeFailures.inc({ place: PLACES.has(place) ? place : 'other', code: Object.hasOwn(ERROR_CATALOGUE, code) ? code : 'other' });
    },
    limitHit(limit) {
      limitsHit.inc({ limit: LIMITS.has(limit) ? limit : 'other' });
    },
    countLimits(session) {
      session.on('limit', (limit) => limitsHit.inc({ limit: LIMITS.has(limit) ? limit : 'other' }));
    },
    reconnect: () => reconnects.inc(),
    policyReload: (result) => policyReloads.inc({ result: result === 'ok' ? 'ok' : 'rejected' }),
    tlsReload: (result) => tlsReloads.inc({ result: result === 'ok' ? 'ok' : 'rejected' }),
    readGauges(s) {
      sources = { ...sources, ...s };
    },
  };
}

function addSession(totals: Record<Direction, number>, session: ByteCountingSession, received: Direction): void {
  totals[received] += session.stats.bytesIn;
  totals[received === 'up' ? 'down' : 'up'] += session.stats.bytesOut;
}
