// The checks every request passes (README "Bridge", "Signing"), in ferry's order: signed at all, the Host the
// bridge answers as, a known key, a time within the window, a well-formed nonce, the HMAC (crypto.subtle.verify:
// constant time). The replay check (a nonce seen within the window) is the coordinator's: it holds the nonces.
import { MAX_SKEW_S, MIN_KEY_BYTES, base64Decode, encoder, hmacKey, sha256Hex, stringToSign, unhex } from "./protocol.js";

export interface Key {
  id: string;
  secret: Uint8Array;
  key: CryptoKey;
}

export interface Config {
  keys: Map<string, Key>;
  publicHost: string;
  prefix: string;
}

let cached: { source: string; config: Config } | undefined;

/** The keys, public host and prefix from the bindings; throws a message naming what is wrong. */
export async function loadConfig(env: { FERRY_KEYS?: string; FERRY_PUBLIC_HOST?: string; FERRY_PREFIX?: string }): Promise<Config> {
  const source = [env.FERRY_KEYS ?? "", env.FERRY_PUBLIC_HOST ?? "", env.FERRY_PREFIX ?? ""].join("\u0000");
  if (cached && cached.source === source) return cached.config;
  if (!env.FERRY_PUBLIC_HOST) throw new Error("FERRY_PUBLIC_HOST is not set (the host clients sign for)");
  let raw: unknown;
  try {
    raw = JSON.parse(env.FERRY_KEYS ?? "");
  } catch {
    throw new Error('FERRY_KEYS is not set to a JSON object {"key id": "secret"}');
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error('FERRY_KEYS must be a JSON object {"key id": "secret"}');
  }
  const keys = new Map<string, Key>();
  for (const [id, value] of Object.entries(raw as Record<string, unknown>)) {
    if (!/^[A-Za-z0-9._-]+$/.test(id)) throw new Error(`FERRY_KEYS: bad key id '${id}'`);
    if (typeof value !== "string") throw new Error(`FERRY_KEYS: the secret of '${id}' must be a string`);
    const secret = value.startsWith("base64:") ? base64Decode(value.slice(7)) : encoder.encode(value);
    if (!secret) throw new Error(`FERRY_KEYS: the secret of '${id}' is not valid base64`);
    if (secret.length < MIN_KEY_BYTES) {
      throw new Error(`FERRY_KEYS: the secret of '${id}' holds ${secret.length} bytes; a key needs at least ${MIN_KEY_BYTES}`);
    }
    keys.set(id, { id, secret, key: await hmacKey(secret) });
  }
  if (keys.size === 0) throw new Error("FERRY_KEYS holds no key");
  const prefix = (env.FERRY_PREFIX ?? "").replace(/\/+$/, "");
  if (prefix !== "" && !/^\/[A-Za-z0-9._~/-]+$/.test(prefix)) throw new Error(`FERRY_PREFIX: bad path prefix '${prefix}'`);
  const config = { keys, publicHost: env.FERRY_PUBLIC_HOST.toLowerCase(), prefix };
  cached = { source, config };
  return config;
}

export interface Verified {
  key: Key;
  sig: Uint8Array;
  sigHex: string;
  time: number;
  nonce: string;
}

export interface Refusal {
  status: number;
  code: string;
  message: string;
}

export interface SignedRequest {
  method: string;
  path: string;
  host: string;
  headers: Headers;
  body: Uint8Array;
}

/** Check a request's signature. `chain` is the hex signature a stdin chunk is signed over ("" for others). */
export async function verify(req: SignedRequest, config: Config, chain: string, now: number): Promise<Verified | Refusal> {
  const h = req.headers;
  const keyId = h.get("x-ferry-key");
  const time = h.get("x-ferry-time");
  const nonce = h.get("x-ferry-nonce");
  const sigHex = h.get("x-ferry-signature");
  if (keyId === null || time === null || nonce === null || sigHex === null) {
    return { status: 401, code: "missing_auth", message: "the request is not signed (X-Ferry-Key, X-Ferry-Time, X-Ferry-Nonce, X-Ferry-Signature)" };
  }
  if (req.host.toLowerCase() !== config.publicHost) {
    return { status: 403, code: "wrong_host", message: `this bridge answers as ${config.publicHost}, not ${req.host}` };
  }
  const key = config.keys.get(keyId);
  if (!key) return { status: 401, code: "unknown_key", message: `unknown key id '${keyId.slice(0, 64)}'` };
  const t = /^\d+$/.test(time) ? Number(time) : NaN;
  if (!Number.isFinite(t) || Math.abs(now - t) > MAX_SKEW_S) {
    return { status: 401, code: "stale_time", message: `X-Ferry-Time ${time.slice(0, 20)} is more than ${MAX_SKEW_S} s from the bridge's clock (${now})` };
  }
  if (!/^[0-9a-fA-F]{32}$/.test(nonce)) return { status: 401, code: "bad_nonce", message: "X-Ferry-Nonce must be 32 hex characters" };
  const given = sigHex.length === 64 ? unhex(sigHex) : null;
  const signed = encoder.encode(stringToSign({
    keyId, method: req.method, path: req.path, host: config.publicHost, time, nonce,
    bodySha256: await sha256Hex(req.body), chain,
  }));
  if (!given || !(await crypto.subtle.verify("HMAC", key.key, given, signed))) {
    return { status: 401, code: "bad_signature", message: "the signature does not match the request" };
  }
  return { key, sig: given, sigHex: sigHex.toLowerCase(), time: t, nonce: nonce.toLowerCase() };
}

export function refused(v: Verified | Refusal): v is Refusal {
  return (v as Refusal).code !== undefined;
}
