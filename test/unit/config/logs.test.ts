import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { generateKeyPairSync } from 'node:crypto';
import { createLogger, scrubString } from '../../../src/log.js';

const KEY_PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
/** The key's base64 body: what must never reach a log line, whatever wraps it. */
const KEY_BODY = KEY_PEM.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
const PASSWORD = 's3cr3t-Pw_9';
const PROXY_URL = `http://alice:${PASSWORD}@proxy.hospital.example:3128`;
const BASIC = Buffer.from(`alice:${PASSWORD}`).toString('base64');

function capture(level = 'trace'): { logger: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger({ name: 'test', level, destination: { write: (line: string) => lines.push(line) } }), lines };
}

function expectClean(lines: string[]): void {
  expect(lines.length).toBeGreaterThan(0);
  for (const line of lines) {
    expect(() => JSON.parse(line), line).not.toThrow();
    for (const chunk of KEY_BODY.match(/.{1,24}/g)!) expect(line).not.toContain(chunk);
    expect(line).not.toContain(PASSWORD);
    expect(line).not.toContain(BASIC);
  }
}

describe('logs never carry keys or passwords', () => {
  it('a private key PEM is dropped wherever it appears: a key field, another field, the message, an error, a child binding', () => {
    const { logger, lines } = capture();
    logger.info({ tls: { cert: 'relay.crt', key: KEY_PEM } }, 'material loaded');
    logger.info({ key: KEY_PEM, privateKey: KEY_PEM });
    logger.info({ material: { pem: KEY_PEM }, list: [KEY_PEM] }, 'other field names');
    logger.warn(`could not parse ${KEY_PEM} as a certificate`);
    logger.warn('interpolated %s', KEY_PEM);
    logger.error({ err: new Error(`bad file content: ${KEY_PEM}`) }, 'reload failed');
    logger.child({ material: KEY_PEM }).info('from a child');
    logger.info({ cut: KEY_PEM.slice(0, 100) }, 'a key cut short');
    expectClean(lines);
    expect(lines.join('\n')).toContain('[redacted private key]');
    expect(JSON.parse(lines[0]!)).toMatchObject({ tls: { cert: 'relay.crt', key: '[redacted]' }, msg: 'material loaded' });
  });

  it('a proxy password is dropped from URLs and authorization headers, the rest of the line kept', () => {
    const { logger, lines } = capture();
    logger.info({ proxy: PROXY_URL }, 'dialing the relay through a proxy');
    logger.info(`CONNECT via ${PROXY_URL} refused`);
    logger.error({ err: new Error(`proxy ${PROXY_URL} answered 407`) }, 'proxy refused');
    logger.debug({ headers: { 'proxy-authorization': `Basic ${BASIC}`, host: 'relay.example:443' } }, 'request');
    logger.debug({ raw: `CONNECT relay.example:443 HTTP/1.1\r\nProxy-Authorization: Basic ${BASIC}\r\n` }, 'raw request');
    logger.debug({ password: PASSWORD, proxyAuthorization: `Basic ${BASIC}` });
    logger.child({ proxy: PROXY_URL }).info('child of a proxied tunnel');
    expectClean(lines);
    const first = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(first['proxy']).toBe('http://alice:[redacted]@proxy.hospital.example:3128');
    expect(lines[2]).toContain('proxy.hospital.example:3128 answered 407');
    expect(JSON.parse(lines[3]!)).toMatchObject({ headers: { 'proxy-authorization': '[redacted]', host: 'relay.example:443' } });
  });

  it('leaves ordinary values alone: dates, numbers, URLs without a password, errors with their stack', () => {
    const { logger, lines } = capture();
    const at = new Date(0);
    logger.info({ at, n: 3, relay: 'wss://relay.example:443/v1/tunnel', user: 'https://alice@example.org/' }, 'authorizationError: CERT_REVOKED');
    logger.error({ err: Object.assign(new Error('boom'), { code: 'POSTERN_ERR_INTERNAL' }) });
    const first = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(first).toMatchObject({ at: at.toISOString(), n: 3, relay: 'wss://relay.example:443/v1/tunnel', user: 'https://alice@example.org/', msg: 'authorizationError: CERT_REVOKED' });
    expect(JSON.parse(lines[1]!)).toMatchObject({ err: { type: 'Error', message: 'boom', code: 'POSTERN_ERR_INTERNAL', stack: expect.stringContaining('boom') } });
  });

  it('the pretty format is scrubbed too (the JSON line is scrubbed before it is formatted)', async () => {
    let written!: (text: string) => void;
    const text = await new Promise<string>((resolve) => {
      written = resolve;
      const logger = createLogger({ name: 'test', level: 'info', format: 'pretty', destination: { write: (line: string) => written(line) } });
      logger.info({ proxy: PROXY_URL, key: KEY_PEM, material: KEY_PEM }, `Proxy-Authorization: Basic ${BASIC}`);
    });
    expect(text).toContain('http://alice:[redacted]@proxy.hospital.example:3128');
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain(BASIC);
    expect(text).not.toContain(KEY_BODY.slice(0, 24));
    expect(text).not.toMatch(/^\{/); // formatted, not JSON
  });

  it('scrubString covers the spellings', () => {
    expect(scrubString('socks5://u:p@h:1 and https://x:y@z/')).toBe('socks5://u:[redacted]@h:1 and https://x:[redacted]@z/');
    expect(scrubString('Authorization: Bearer abc.def')).toBe('Authorization: Bearer [redacted]');
    expect(scrubString('Basic authentication is off')).toBe('Basic authentication is off');
    expect(scrubString('{"proxy-authorization":"Basic Zm9v"}')).toBe('{"proxy-authorization":"Basic [redacted]"}');
    expect(scrubString('-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----')).toBe('[redacted private key]\n-----BEGIN CERTIFICATE-----');
  });

  it('keeps every JSON line valid and drops the secret, whatever surrounds it (fast-check)', () => {
    const pieces = fc.constantFrom('"', '\\', ':', '@', '/', ' ', '\n', '\r', ',', '}', '=', "'", 'x', 'http://', 'a:b@', 'authorization', 'Proxy-Authorization: ', 'Basic ', '-----BEGIN PRIVATE KEY-----', '-----END PRIVATE KEY-----');
    const text = fc.array(fc.oneof(pieces, fc.string({ maxLength: 4 })), { maxLength: 12 }).map((a) => a.join(''));
    const secret = fc.constantFrom(KEY_PEM, PROXY_URL, `Proxy-Authorization: Basic ${BASIC}`);
    fc.assert(
      fc.property(text, secret, text, (before, s, after) => {
        const line = JSON.stringify({ level: 30, msg: before + s + after, nested: { v: [after, s] } });
        const scrubbed = scrubString(line);
        expect(() => JSON.parse(scrubbed)).not.toThrow();
        expect(scrubbed).not.toContain(PASSWORD);
        expect(scrubbed).not.toContain(BASIC);
        expect(scrubbed).not.toContain(KEY_BODY.slice(0, 24));
      }),
      { numRuns: 500 },
    );
  });
});
