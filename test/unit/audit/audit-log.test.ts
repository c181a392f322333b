import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createLogger } from '../../../src/log.js';
import { createAuditLog, pinoAuditSink } from '../../../src/audit/audit-log.js';

describe('audit log', () => {
  it('writes one JSON line per event, flagged audit, named by the logger', async () => {
    const lines: string[] = [];
    const destination = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
    const audit = createAuditLog('relay', [pinoAuditSink(createLogger({ name: 'relay', destination }))]);
    audit.emit({ event: 'stream.open', correlationId: 'c1', principal: 'spiffe://td/org/o/user/a', connector: 'hq', target: 'db:5432', decision: 'deny', reason: 'default-deny' });
    const line = JSON.parse(lines[0]!);
    expect(line).toMatchObject({ audit: true, event: 'stream.open', name: 'relay', decision: 'deny', reason: 'default-deny', msg: 'stream.open' });
    expect(lines[0]!.match(/"time":/g)).toHaveLength(1);
  });
});
