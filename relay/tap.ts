import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';

/**
 * Auditor's tap: copies the first `maxBytes` of each direction of every spliced stream to
 * `<dir>/<correlation-id>.agent-to-connector` and `.connector-to-agent`, exactly as the relay
 * forwards them. It exists to *show* on a live system that the relay handles only inner-TLS
 * ciphertext (records starting 0x16 0x03, then 0x17 application data). Off by default; the
 * copy is bounded per stream and never slows the splice (extra 'data' listeners only).
 */
export function tapStream(dir: string, maxBytes: number, correlationId: string, agentLeg: Readable, connectorLeg: Readable, agentEarly: readonly Buffer[] = []): void {
  copyPrefix(agentLeg, join(dir, `${correlationId}.agent-to-connector`), maxBytes, agentEarly);
  copyPrefix(connectorLeg, join(dir, `${correlationId}.connector-to-agent`), maxBytes);
}

/** `first`: bytes forwarded before the leg was spliced (the agent's early data). */
function copyPrefix(source: Readable, path: string, maxBytes: number, first: readonly Buffer[] = []): void {
  let file: WriteStream | undefined;
  let written = 0;
  const close = (): void => {
    source.off('data', onData);
    file?.end();
  };
  const onData = (chunk: Buffer): void => {
    file ??= createWriteStream(path, { mode: 0o600 }).on('error', close);
    const take = Math.min(chunk.length, maxBytes - written);
    file.write(chunk.subarray(0, take));
    written += take;
    if (written >= maxBytes) close();
  };
  for (const chunk of first) if (written < maxBytes) onData(chunk);
  if (written >= maxBytes) return;
  source.on('data', onData);
  source.once('close', close);
}
