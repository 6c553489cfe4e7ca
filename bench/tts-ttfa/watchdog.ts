/**
 * Preloaded into each gateway child (`node --import bench/tts-ttfa/watchdog.ts src/main.ts`): when
 * the bench dies without stopping the gateway (SIGKILL, crash), the stdin pipe closes and the
 * gateway gets the SIGTERM it would have been sent. The gateway code is untouched.
 */
process.stdin.on('error', () => {});
process.stdin.on('end', () => process.kill(process.pid, 'SIGTERM'));
process.stdin.resume();
process.stdin.unref();
