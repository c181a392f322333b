import type { PosternMetrics } from '../metrics/metrics.js';
import { jsonReply, type AdminRoute } from './server.js';
import { POSTERN_VERSION } from './version.js';

export type Readiness = { ready: true } | { ready: false; reason: string };

/** What a relay or connector shows on its admin endpoint. */
export interface AdminSource {
  metrics: PosternMetrics;
  /** /readyz: whether this process should receive traffic now, and why not. */
  readiness(): Readiness;
  /** /v1/status: a JSON-able snapshot of the process's state. */
  status(): object;
}

/**
 * /healthz 200 while the process answers at all; /readyz 200 or 503 with the reason;
 * /metrics in the Prometheus text format; /v1/status JSON with the version of Postern and Node.
 */
export function adminRoutes(source: AdminSource): Record<string, AdminRoute> {
  return {
    '/healthz': () => jsonReply(200, { status: 'ok' }),
    '/readyz': () => {
      const readiness = source.readiness();
      return readiness.ready ? jsonReply(200, { ready: true }) : jsonReply(503, { ready: false, reason: readiness.reason });
    },
    '/metrics': async () => ({ status: 200, contentType: source.metrics.contentType, body: await source.metrics.text() }),
    '/v1/status': () =>
      jsonReply(200, {
        component: source.metrics.component,
        version: POSTERN_VERSION,
        node: process.version,
        uptimeSeconds: Math.round(process.uptime()),
        ...source.status(),
      }),
  };
}
