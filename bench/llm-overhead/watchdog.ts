/**
 * Preloaded into each server child (`node --import bench/llm-overhead/watchdog.ts ...`): when the
 * bench dies without stopping it (SIGKILL, crash), the stdin pipe closes and the child gets the
 * SIGTERM it would have been sent. Costs nothing while the bench is alive (an idle pipe read);
 * neither the gateway nor Portkey is modified.
 */
process.stdin.on('error', () => {});
process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
process.stdin.resume();
process.stdin.unref();
