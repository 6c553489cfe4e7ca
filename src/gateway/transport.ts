/**
 * The transport seam: everything the gateway needs from a WebSocket server, implemented with
 * `ws` (+ bufferutil) on node:http. uWebSockets.js does not load on this platform (glibc 2.36);
 * swapping the implementation touches only this file.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';

export interface WsConnection {
  send(data: string | Buffer): void;
  readonly bufferedAmount: number;
  readonly isOpen: boolean;
  close(code: number, reason?: string): void;
  terminate(): void;
  onMessage(handler: (data: Buffer, isBinary: boolean) => void): void;
  onClose(handler: (code: number) => void): void;
}

export interface WsTransport {
  /** Complete the upgrade of an already-validated request. */
  accept(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<WsConnection>;
  /**
   * Stop accepting; sockets already closing get `graceMs` to flush their last messages and close
   * frame, then every socket still there is cut.
   */
  close(graceMs?: number): Promise<void>;
}

export function createWsTransport(opts: { maxPayload: number }): WsTransport {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: opts.maxPayload,
    perMessageDeflate: false,
    // Tracked so that close() can cut sockets that outlive a shutdown deadline.
    clientTracking: true,
  });
  return {
    accept(req, socket, head) {
      return new Promise((resolve) => {
        wss.handleUpgrade(req, socket, head, (ws) => resolve(wrap(ws)));
      });
    },
    async close(graceMs = 1000) {
      wss.close();
      const deadline = Date.now() + graceMs;
      while (wss.clients.size > 0 && Date.now() < deadline) {
        // Open sockets past the shutdown deadline are told so; closing ones finish their flush.
        for (const ws of wss.clients) if (ws.readyState === WebSocket.OPEN) ws.close(1001, 'server shutting down');
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const ws of wss.clients) ws.terminate();
    },
  };
}

function wrap(ws: WebSocket): WsConnection {
  // Errors (bad frames, payload too large, resets) are followed by 'close'; that is what we act on.
  ws.on('error', () => {});
  return {
    send(data) {
      if (ws.readyState === WebSocket.OPEN) ws.send(data);
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    get isOpen() {
      return ws.readyState === WebSocket.OPEN;
    },
    close(code, reason) {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(code, reason);
    },
    terminate() {
      ws.terminate();
    },
    onMessage(handler) {
      ws.on('message', handler);
    },
    onClose(handler) {
      ws.on('close', (code: number) => handler(code));
    },
  };
}
