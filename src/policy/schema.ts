import { z } from 'zod';

const nonEmpty = 'must list at least one entry (an empty list never means "everything")';

/**
 * Shape of a policy document (docs/policy.md). Only the shape: names, references between
 * orgs/teams/connectors and target patterns are checked by compile.ts, which knows where each
 * field sits in the file. strictObject everywhere: an unknown key is an error, never ignored.
 */
export const PolicyDocumentSchema = z.strictObject({
  version: z.literal(1, { error: 'must be 1 (the only policy format version)' }),
  trustDomain: z.string(),
  orgs: z.record(
    z.string(),
    z.strictObject({
      teams: z.record(z.string(), z.array(z.string())).optional(),
      connectors: z.record(
        z.string(),
        z.strictObject({
          description: z.string().optional(),
          targets: z.array(z.string()).min(1, { error: nonEmpty }),
        }),
      ).optional(),
    }),
  ),
  rules: z.array(
    z.strictObject({
      id: z.string(),
      description: z.string().optional(),
      org: z.string(),
      principals: z.array(z.string()).min(1, { error: nonEmpty }),
      connector: z.string(),
      targets: z.array(z.string()).min(1, { error: nonEmpty }),
      action: z.enum(['allow', 'deny'], { error: 'must be "allow" or "deny"' }),
    }),
  ),
});

export type PolicyDocument = z.output<typeof PolicyDocumentSchema>;
