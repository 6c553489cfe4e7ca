/**
 * Preloaded into the gateway child (`node --import bench/stt-proxy/watchdog.ts src/main.ts`):
 * when the bench that started the gateway dies without stopping it (SIGKILL, crash), the stdin
 * pipe closes and the gateway is killed. Costs nothing while the bench is alive (an idle pipe
 * read); the gateway code is untouched.
 *
 * SIGKILL, not SIGTERM: with the bench gone the gateway's stdout has no reader, and its graceful
 * exit then never finishes (pino's exit flush retries the failed write forever; docs/perf.md,
 * STT proxy observations).
 */
process.stdin.on('error', () => {});
process.stdin.on('end', () => process.kill(process.pid, 'SIGKILL'));
process.stdin.resume();
process.stdin.unref();
