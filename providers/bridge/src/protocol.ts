// What the Worker shares with ferry's client and server (README "Bridge", protocol v1): the string a request
// signature covers, the response signature, the output frames with their chained MACs, ids, limits and the
// JSON error envelope. WebCrypto only: the same code runs in Workers and in Node 20.

export const VERSION = "v1";
export const SIGN_TAG = "ferry-bridge-v1";
export const RESPONSE_TAG = "ferry-bridge-v1-response";
export const MAX_SKEW_S = 300;
export const MAX_CHUNK = 1024 * 1024;
export const MAX_FRAME = 1024 * 1024;
export const MAX_HEADER = 16 * 1024;
export const STDIN_WINDOW = 4;
export const MIN_KEY_BYTES = 32;
export const MAX_NONCES = 200000;
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export const STDOUT = "o";
export const STDERR = "e";
export const KEEPALIVE = "k";
export const EXIT = "x";
export type FrameKind = typeof STDOUT | typeof STDERR | typeof KEEPALIVE | typeof EXIT;

export const encoder = new TextEncoder();
const HEX = "0123456789abcdef";

export function hex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i] >> 4] + HEX[bytes[i] & 15];
  return out;
}

/** Bytes of hex (either case); null when `s` is not hex of even length. */
export function unhex(s: string): Uint8Array | null {
  if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) return null;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
  return out;
}

export function newId(bytes: number): string {
  return hex(crypto.getRandomValues(new Uint8Array(bytes)));
}

export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}

export function hmacKey(secret: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** HMAC-SHA256 of the concatenation of `parts`. */
export async function hmac(key: CryptoKey, ...parts: Uint8Array[]): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, concat(parts)));
}

/** Fields of a request signature: key id, method, path (with the query, as sent), host (the public host),
 *  time, nonce, body sha256 (hex), chain ("" or the hex signature a stdin chunk follows). */
export interface SignFields {
  keyId: string;
  method: string;
  path: string;
  host: string;
  time: string;
  nonce: string;
  bodySha256: string;
  chain: string;
}

export function stringToSign(f: SignFields): string {
  return [SIGN_TAG, f.keyId, f.method, f.path, f.host.toLowerCase(), f.time, f.nonce, f.bodySha256, f.chain].join("\n");
}

/** The hex signature of a JSON response: covers the request's signature, the status and the body. */
export async function signResponse(key: CryptoKey, requestSigHex: string, status: number, body: string): Promise<string> {
  const text = [RESPONSE_TAG, requestSigHex, String(status), await sha256Hex(body)].join("\n");
  return hex(await hmac(key, encoder.encode(text)));
}

/** Writes the frames of an output stream, each MAC chained on the previous one; the first on `seed`, the raw
 *  signature of the request that opened the stream. */
export class FrameWriter {
  private prev: Uint8Array;
  constructor(private key: CryptoKey, seed: Uint8Array) {
    this.prev = seed;
  }

  async frame(kind: FrameKind, payload: Uint8Array): Promise<Uint8Array> {
    const head = new Uint8Array(5);
    head[0] = kind.charCodeAt(0);
    new DataView(head.buffer).setUint32(1, payload.length);
    const mac = await hmac(this.key, this.prev, head, payload);
    this.prev = mac;
    return concat([head, payload, mac]);
  }
}

export function errorBody(code: string, message: string): { error: string; message: string } {
  return { error: code, message };
}

/** Base64 of bytes, through the platform's btoa (native in Workers and Node) a slice at a time. */
export function base64Encode(bytes: Uint8Array): string {
  const SLICE = 3 * 8192; // a multiple of 3: no padding inside
  const parts: string[] = [];
  for (let at = 0; at < bytes.length; at += SLICE) {
    parts.push(btoa(String.fromCharCode.apply(null, bytes.subarray(at, at + SLICE) as unknown as number[])));
  }
  return parts.join("");
}

/** Bytes of base64 (padding optional); null when `s` is not base64. */
export function base64Decode(s: string): Uint8Array | null {
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    return null;
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Signal numbers as ferry names them (Linux). */
const SIGNALS: Record<number, string> = {
  1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL",
  10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
};

export function signalName(n: number): string {
  return SIGNALS[n] ?? `SIG${n}`;
}
