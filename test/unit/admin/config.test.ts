import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ADMIN_DEFAULT_LISTEN, adminConfigSchema, adminFlag, certificateReport, earliestExpiry, peerVersion } from '../../../src/admin/index.js';
import { layerConfig } from '../../../src/config/layers.js';
import { isPosternError } from '../../../src/errors.js';
import { validateOptions } from '../../../src/options.js';
import { createCa, issueLeaf, loadCaMaterial } from '../../../src/pki/index.js';

const schema = z.strictObject({ admin: adminConfigSchema(ADMIN_DEFAULT_LISTEN.relay) });
const parse = (input: unknown) => validateOptions(schema, input, 'relay.yaml');

describe('admin config', () => {
  it('defaults to loopback on the given port; host:port, port 0 and false are accepted', () => {
    expect(parse({}).admin).toEqual({ listen: { host: '127.0.0.1', port: 9090 } });
    expect(parse({ admin: {} }).admin).toEqual({ listen: { host: '127.0.0.1', port: 9090 } });
    expect(parse({ admin: { listen: '127.0.0.1:0' } }).admin).toEqual({ listen: { host: '127.0.0.1', port: 0 } });
    expect(parse({ admin: { listen: '[::1]:9100' } }).admin).toEqual({ listen: { host: '::1', port: 9100 } });
    expect(parse({ admin: false }).admin).toBe(false);
    expect(validateOptions(z.strictObject({ admin: adminConfigSchema(ADMIN_DEFAULT_LISTEN.connector) }), {}, 'c').admin).toEqual({ listen: { host: '127.0.0.1', port: 9091 } });
  });

  it.each([
    [{ admin: true }, 'POSTERN_ERR_CONFIG_INVALID', /field "admin": expected false \(no admin endpoint\) or \{ listen: "host:port" \}/],
    [{ admin: { listen: 'nowhere' } }, 'POSTERN_ERR_CONFIG_INVALID', /field "admin"/],
    [{ admin: { listen: '127.0.0.1:70000' } }, 'POSTERN_ERR_CONFIG_INVALID', /field "admin"/],
    [{ admin: { lisen: '127.0.0.1:1' } }, 'POSTERN_ERR_CONFIG_UNKNOWN_KEY', /unknown key "admin\.lisen"/],
  ])('%j is refused naming the field', (input, code, message) => {
    let err: unknown;
    try {
      parse(input);
    } catch (e) {
      err = e;
    }
    expect(isPosternError(err, code as 'POSTERN_ERR_CONFIG_INVALID')).toBe(true);
    expect((err as Error).message).toMatch(message);
  });

  it('--admin takes host:port or off, over the file', () => {
    const withFile = (yaml: string, flag: string | undefined) => layerConfig(schema, 'relay', { name: 'relay.yaml', text: yaml }, {}, adminFlag(flag)).config.admin;
    expect(withFile('admin:\n  listen: 127.0.0.1:9100\n', '127.0.0.1:0')).toEqual({ listen: { host: '127.0.0.1', port: 0 } });
    expect(withFile('admin:\n  listen: 127.0.0.1:9100\n', 'off')).toBe(false);
    expect(withFile('admin: false\n', '[::1]:9090')).toEqual({ listen: { host: '::1', port: 9090 } });
    expect(withFile('{}\n', undefined)).toEqual({ listen: { host: '127.0.0.1', port: 9090 } });
    expect(() => withFile('{}\n', '9090')).toThrow(/^flag --admin: field "admin": expected false \(no admin endpoint\) or \{ listen: "host:port" \}/);
  });
});

describe('peer version header', () => {
  it('shows a short version string, nothing else a peer might send', () => {
    for (const v of ['0.1.0', '1.2.3-rc.1+build.7']) expect(peerVersion(v)).toBe(v);
    for (const v of [undefined, ['0.1.0', '0.2.0'], '', 'x'.repeat(41), '1.0 beta', '<b>1</b>', '-1', 'spiffe://a/b']) expect(peerVersion(v)).toBeUndefined();
  });
});

describe('certificate report', () => {
  it('lists every certificate of each kind with its expiry; the earliest of each kind feeds the metric', async () => {
    const ca = await createCa({ trustDomain: 'hospital.example', days: 365 });
    const other = await createCa({ trustDomain: 'hospital.example', days: 30 });
    const material = await loadCaMaterial(ca.certPem, ca.keyPem, { cert: 'ca.crt', key: 'ca.key' });
    const leaf = await issueLeaf(material, { role: 'relay', name: 'relay-1', days: 10 });

    const report = certificateReport({ cert: Buffer.from(leaf.certPem), ca: [Buffer.from(ca.certPem), other.certPem] });
    expect(report.cert).toEqual([
      expect.objectContaining({ uri: 'spiffe://hospital.example/relay/relay-1', serial: leaf.serial, notAfter: leaf.notAfter.toISOString() }),
    ]);
    expect(report.ca).toHaveLength(2);
    expect(report.inner_cert).toBeUndefined();
    expect(JSON.stringify(report)).not.toContain('PRIVATE KEY');

    const earliest = earliestExpiry(report);
    expect(earliest.cert).toEqual(leaf.notAfter);
    expect(earliest.ca!.getTime()).toBe(Math.min(...report.ca!.map((c) => Date.parse(c.notAfter))));
    expect(earliest.ca!.getTime()).toBeLessThan(Date.now() + 31 * 86_400_000);
  });
});
