/**
 * Preloaded (`node --expose-gc --import …/gc-hook.js`) into the Postern processes the bench
 * starts, so the memory of a real relay or connector can be read after a full GC: on SIGUSR2
 * it collects twice and writes one JSON line to stderr. The product code is not touched.
 */
process.on('SIGUSR2', () => {
  if (global.gc) {
    // Twice: the first pass may only queue finalizers that free more on the second.
    global.gc();
    global.gc();
  }
  const m = process.memoryUsage();
  process.stderr.write(`${JSON.stringify({ event: 'bench.gc', rss: m.rss, heapUsed: m.heapUsed, external: m.external })}\n`);
});
