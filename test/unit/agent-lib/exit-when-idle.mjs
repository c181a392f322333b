// Child process of cli.test.ts: dials once and never calls agent.close(). It must exit by itself:
// an idle relay session (or one whose only stream is unref'd) keeps no process alive.
import { once } from 'node:events';
import { Agent } from '../../../dist/agent-lib/index.js';

const [relay, trustDomain, cert, key, ca, mode] = process.argv.slice(2);
const agent = new Agent({ trustDomain, relay, tls: { cert, key, ca } });
const socket = await agent.dial({ connector: 'hq', target: 'echo.internal:7' });
if (mode === 'closed') {
  socket.resume();
  socket.end('bye');
  await once(socket, 'close');
} else {
  socket.unref();
}
process.stdout.write(`dialed (${mode})\n`);
