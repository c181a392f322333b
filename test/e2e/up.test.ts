import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type TestPostgres } from '../helpers/pg.js';
import { startPostern, stopAll } from '../helpers/processes.js';

describe('postern up (npm start)', () => {
  let postgres: TestPostgres;
  let dir: string;
  beforeAll(async () => {
    [postgres, dir] = await Promise.all([startPostgres(), mkdtemp(join(tmpdir(), 'postern-up-'))]);
  });
  afterAll(async () => {
    await stopAll();
    await postgres?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('brings up a whole stack in one command, prints the psql line that works, and stops cleanly on Ctrl-C; a second start reuses the CA', async () => {
    for (const round of [1, 2]) {
      const up = startPostern('up', ['up', '--target', `127.0.0.1:${postgres.port}`, '--listen', '127.0.0.1:0', '--dir', dir]);
      const line = await up.waitFor((l) => typeof l.msg === 'string' && /^\s*psql -h /.test(l.msg));
      const m = /psql -h (\S+) -p (\d+) -U postgres/.exec(String(line.msg));
      expect(m, String(line.msg)).not.toBeNull();
      expect((await postgres.psql('select 6 * 7', { host: m![1]!, port: Number(m![2]) })).trim()).toBe('42');
      const { code } = await up.stop('SIGINT');
      expect(code, `round ${round}: ${up.stderr}`).toBe(0);
    }
  });
});
