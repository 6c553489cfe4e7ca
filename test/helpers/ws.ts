/** A small promise-based WebSocket test client (plain `ws`), every wait bounded. */
import WebSocket from 'ws';

export interface UpgradeRejection {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/** Open a socket; resolves with the socket, or with the HTTP rejection of the upgrade. */
export function openWs(url: string, headers: Record<string, string> = {}, timeoutMs = 5000): Promise<WebSocket | UpgradeRejection> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`timeout opening ${url}`));
    }, timeoutMs);
    ws.on('open', () => {
      clearTimeout(timer);
      resolve(ws);
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
      });
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export interface JsonMessage {
  type: string;
  [k: string]: unknown;
}

/** Collects every message of a socket, parsed, and lets tests wait for specific ones. */
export class WsRecorder {
  readonly messages: JsonMessage[] = [];
  closeCode: number | undefined;
  closeReason = '';
  private waiters: Array<() => void> = [];
  readonly ws: WebSocket;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.messages.push(isBinary ? { type: '__binary__', bytes: data.length } : (JSON.parse(data.toString()) as JsonMessage));
      this.notify();
    });
    ws.on('close', (code: number, reason: Buffer) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
      this.notify();
    });
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  of(type: string): JsonMessage[] {
    return this.messages.filter((m) => m.type === type);
  }

  /** Wait until `pred` holds (checked after every message/close). */
  async until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got: ${JSON.stringify(this.messages.map((m) => m.type))} close=${this.closeCode}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async next(type: string, timeoutMs = 10_000): Promise<JsonMessage> {
    const seen = this.of(type).length;
    await this.until(() => this.of(type).length > seen, `message ${type}`, timeoutMs);
    return this.of(type)[seen] as JsonMessage;
  }

  async first(type: string, timeoutMs = 10_000): Promise<JsonMessage> {
    await this.until(() => this.of(type).length > 0, `message ${type}`, timeoutMs);
    return this.of(type)[0] as JsonMessage;
  }

  async closed(timeoutMs = 10_000): Promise<number> {
    await this.until(() => this.closeCode !== undefined, 'close', timeoutMs);
    return this.closeCode as number;
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg));
  }
}
