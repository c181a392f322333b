import type { Logger } from '../log.js';
import type { AuditEvent, AuditSink } from './events.js';

/**
 * Pino sink: one JSON line per event with `audit: true`, so operators can filter the trail.
 * The logger already names the component and the time, so those stamps are not repeated.
 */
export function pinoAuditSink(logger: Logger): AuditSink {
  return {
    write({ component: _component, at: _at, ...event }) {
      logger.info({ audit: true, ...event }, event.event);
    },
  };
}

export interface AuditLog {
  emit(event: AuditEvent): void;
}

/** Fans an event out to every sink, stamped with the component and time. */
export function createAuditLog(component: string, sinks: AuditSink[]): AuditLog {
  return {
    emit(event) {
      const stamped = { ...event, component, at: new Date().toISOString() };
      for (const sink of sinks) sink.write(stamped);
    },
  };
}
