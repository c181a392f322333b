import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type TestPostgres } from '../../helpers/pg.js';

describe('throwaway PostgreSQL helper', () => {
  let pg: TestPostgres;
  beforeAll(async () => { pg = await startPostgres(); });
  afterAll(async () => { await pg?.stop(); });

  it('serves queries on a loopback port', async () => {
    expect((await pg.psql('select 40 + 2')).trim()).toBe('42');
  });
});
