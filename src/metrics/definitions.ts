import { OpenResult } from '../protocol/reasons.js';

/**
 * The one place that names every Postern metric (docs/operations.md, "Admin endpoint and
 * metrics"). Each label takes its values from a closed list below: never an identity, a target
 * or a message, so a scrape stays small whatever peers do.
 */

export type Component = 'relay' | 'connector' | 'agent';

/** OPEN_RESULT names in lower case (ok, policy_denied, …); `unknown` for a number this version does not define. */
export type StreamResult = Lowercase<keyof typeof OpenResult> | 'unknown';
export const STREAM_RESULTS: readonly StreamResult[] = Object.freeze([
  ...Object.keys(OpenResult).map((name) => name.toLowerCase() as StreamResult),
  'unknown',
]);

/**
 * Where a handshake failed: `outer` the relay's TLS handshake, `upgrade` the relay's WebSocket
 * upgrade, `connector`/`agent` the relay's door refused the certificate, `inner` the connector's
 * inner TLS with an agent, `tunnel` the connector's dial of a relay, `other` anything else.
 */
export const HANDSHAKE_PLACES = ['outer', 'upgrade', 'connector', 'agent', 'inner', 'tunnel', 'other'] as const;
export type HandshakePlace = (typeof HANDSHAKE_PLACES)[number];

/**
 * Limits counted when they refuse something, by the option name that sets them, with the
 * process that enforces each (only its own read 0 from the start). The mux's per-session limits
 * (maxStreams, maxPendingOpens, maxOpensPerSecond) are not here: the session refuses those
 * itself and reports no event; the peer counts the refusal as streams_total{result="limit_reached"}.
 */
export const LIMIT_NAMES = ['maxSessions', 'maxConcurrentHandshakes', 'maxConnections', 'maxStreams', 'maxPendingOpens', 'maxOpensPerSecond'] as const;
/** The mux's per-session limits (src/mux SessionLimit), counted where the peer opens streams. */
const SESSION_LIMITS = ['maxStreams', 'maxPendingOpens', 'maxOpensPerSecond'] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];
export const LIMITS_OF: Readonly<Record<Component, readonly LimitName[]>> = Object.freeze({
  relay: ['maxSessions', ...SESSION_LIMITS],
  connector: ['maxConcurrentHandshakes', ...SESSION_LIMITS],
  agent: ['maxConnections'],
});

export const RELOAD_RESULTS = ['ok', 'rejected'] as const;
export type ReloadResult = (typeof RELOAD_RESULTS)[number];

/** `up`: from the agent towards the target; `down`: back. */
export const DIRECTIONS = ['up', 'down'] as const;
export type Direction = (typeof DIRECTIONS)[number];

/** Which certificate an expiry is about; a bundle reports its earliest. */
export const CERTIFICATE_KINDS = ['cert', 'ca', 'inner_cert', 'inner_ca'] as const;
export type CertificateKind = (typeof CERTIFICATE_KINDS)[number];

/** Seconds from an open request to a connected stream: loopback is milliseconds, a WAN hop tens of them. */
export const OPEN_DURATION_BUCKETS: readonly number[] = Object.freeze([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);

interface Definition {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly help: string;
  readonly labels: readonly string[];
  /** The processes that export it; elsewhere it would only ever read 0. */
  readonly components: readonly Component[];
}

const ALL: readonly Component[] = ['relay', 'connector', 'agent'];

export const METRICS = {
  tunnelsUp: {
    name: 'postern_tunnels_up',
    type: 'gauge',
    help: 'Connector tunnels up: at the relay, tunnels connectors hold to it; at a connector, the relays it holds a live tunnel to.',
    labels: [],
    components: ['relay', 'connector'],
  },
  streamsOpen: {
    name: 'postern_streams_open',
    type: 'gauge',
    help: 'Streams connected end to end and carrying data now.',
    labels: [],
    components: ALL,
  },
  streamsTotal: {
    name: 'postern_streams_total',
    type: 'counter',
    help: 'Stream opens decided, by result: ok, or the OPEN_RESULT name of the refusal (docs/protocol.md).',
    labels: ['result'],
    components: ALL,
  },
  streamBytes: {
    name: 'postern_stream_bytes_total',
    type: 'counter',
    help: 'Stream payload bytes carried by the tunnel sessions of this process (ciphertext of the inner TLS), up = agent towards target.',
    labels: ['direction'],
    components: ALL,
  },
  openDuration: {
    name: 'postern_open_duration_seconds',
    type: 'histogram',
    help: 'Seconds from an open request to a connected stream (opens that succeeded).',
    labels: [],
    components: ALL,
  },
  handshakeFailures: {
    name: 'postern_handshake_failures_total',
    type: 'counter',
    help: 'TLS handshakes, upgrades and certificate checks that failed, by place and POSTERN_ERR_* code.',
    labels: ['place', 'code'],
    components: ALL,
  },
  reconnects: {
    name: 'postern_reconnects_total',
    type: 'counter',
    help: 'Connection attempts to a relay after the first one (retries after a failure, redials after a drop or a GOAWAY).',
    labels: [],
    components: ['connector', 'agent'],
  },
  policyReloads: {
    name: 'postern_policy_reloads_total',
    type: 'counter',
    help: 'Policy reloads, by result: ok, or rejected (the new policy did not load; the previous one stays).',
    labels: ['result'],
    components: ['relay'],
  },
  tlsReloads: {
    name: 'postern_tls_reloads_total',
    type: 'counter',
    help: 'Reloads of certificate, key, trust bundle and CRL files, by result: ok, or rejected (the previous ones stay).',
    labels: ['result'],
    components: ['relay', 'connector'],
  },
  limitsHit: {
    name: 'postern_limits_hit_total',
    type: 'counter',
    help: 'Sessions, streams or opens refused by a limit, by the option that sets it.',
    labels: ['limit'],
    components: ALL,
  },
  agentSessions: {
    name: 'postern_agent_sessions',
    type: 'gauge',
    help: 'Agent sessions connected to this relay.',
    labels: [],
    components: ['relay'],
  },
  certificateExpiry: {
    name: 'postern_certificate_expiry_timestamp_seconds',
    type: 'gauge',
    help: 'Unix time the certificates in use expire, by kind (a trust bundle reports its earliest CA).',
    labels: ['kind'],
    components: ['relay', 'connector'],
  },
} as const satisfies Record<string, Definition>;

export type MetricKey = keyof typeof METRICS;
