// The Worker's fetch handler: protocol v1 (README "Bridge") in front of the Durable Objects. Every request is
// size-checked, verified (auth.ts; the replay check and the lease check in one call to the coordinator) and
// routed; lease and exec routes go to the lease's object (lease.ts); JSON answers carry the response
// signature. One JSON audit line per request goes to the log (console.log: Workers Logs / Logpush).
import { loadConfig, refused, verify, type Config, type Verified } from "./auth.js";
import { MAX_CHUNK, MAX_HEADER, VERSION, concat, errorBody, signResponse } from "./protocol.js";
import type { Env, ExecSpec, PublicLease } from "./types.js";

const ROUTES: Array<[string, RegExp, string]> = [
  ["GET", /^\/health$/, "health"],
  ["POST", /^\/leases$/, "acquire"],
  ["GET", /^\/leases$/, "list"],
  ["GET", /^\/leases\/([0-9a-fA-F]+)$/, "get"],
  ["POST", /^\/leases\/([0-9a-fA-F]+)\/renew$/, "renew"],
  ["DELETE", /^\/leases\/([0-9a-fA-F]+)$/, "release"],
  ["POST", /^\/leases\/([0-9a-fA-F]+)\/execs$/, "exec"],
  ["GET", /^\/leases\/([0-9a-fA-F]+)\/execs\/([0-9a-fA-F]+)\/output$/, "output"],
  ["PUT", /^\/leases\/([0-9a-fA-F]+)\/execs\/([0-9a-fA-F]+)\/stdin$/, "stdin"],
  ["DELETE", /^\/leases\/([0-9a-fA-F]+)\/execs\/([0-9a-fA-F]+)$/, "kill"],
];

interface Route {
  name: string;
  leaseId?: string;
  execId?: string;
  pattern: string;
}

function route(prefix: string, method: string, pathname: string): Route | "method" | undefined {
  const base = `${prefix}/${VERSION}`;
  if (!pathname.startsWith(base + "/")) return undefined;
  const rest = pathname.slice(base.length);
  let otherMethod = false;
  for (const [m, re, name] of ROUTES) {
    const hit = re.exec(rest);
    if (hit && m !== method) otherMethod = true;
    else if (hit) {
      const pattern = `${method} /${VERSION}` + re.source.replace(/[\^$\\]/g, "").replace(/\(\[0-9a-fA-F\]\+\)/g, ":id");
      return { name, leaseId: hit[1], execId: hit[2], pattern };
    }
  }
  return otherMethod ? "method" : undefined;
}

interface Ctx {
  request: Request;
  config: Config | undefined;
  auth: Verified | undefined;
  lease: PublicLease | undefined;
  route: string | undefined;
  argv0: string | undefined;
  bytesIn: number;
  t0: number;
  status?: number;
}

async function respond(ctx: Ctx, status: number, body: unknown): Promise<Response> {
  const text = JSON.stringify(body);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (ctx.auth) headers["x-ferry-response-signature"] = await signResponse(ctx.auth.key.key, ctx.auth.sigHex, status, text);
  ctx.status = status;
  audit(ctx, { status, bytes_out: text.length });
  return new Response(text, { status, headers });
}

function fail(ctx: Ctx, status: number, code: string, message: string): Promise<Response> {
  return respond(ctx, status, errorBody(code, message));
}

function auditRecord(ctx: Ctx): Record<string, unknown> {
  const l = ctx.lease;
  return {
    time: new Date(ctx.t0).toISOString().replace(/\.\d+Z$/, "Z"), key: ctx.auth?.key.id ?? null, lease: l?.id ?? null,
    issue: l?.issue ?? null, run: l?.run ?? null, route: ctx.route ?? `${ctx.request.method} ?`, status: ctx.status ?? null,
    argv0: ctx.argv0 ?? null, exit_code: null, bytes_in: ctx.bytesIn, bytes_out: 0, duration_ms: 0,
  };
}

function audit(ctx: Ctx, extra: Record<string, unknown>): void {
  console.log(JSON.stringify({ ...auditRecord(ctx), ...extra, duration_ms: Date.now() - ctx.t0 }));
}

/** The body, at most MAX_CHUNK bytes; null when it is bigger. */
async function readBody(request: Request): Promise<Uint8Array | null> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_CHUNK) return null;
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_CHUNK) {
      await reader.cancel().catch(() => undefined);
      return null;
    }
    parts.push(value);
  }
  return concat(parts);
}

function coordinator(env: Env) {
  return env.FERRY_COORDINATOR.get(env.FERRY_COORDINATOR.idFromName("coordinator"));
}

function leaseObject(env: Env, id: string) {
  return env.FERRY_LEASE.get(env.FERRY_LEASE.idFromName(id));
}

async function call(stub: { fetch(input: string, init?: RequestInit): Promise<Response> }, path: string, body: unknown) {
  const res = await stub.fetch("https://internal" + path, { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The fields of a JSON body as the protocol allows them; a message when they are not. */
function labels(body: Record<string, unknown>): Record<string, string | number | undefined> | string {
  const out: Record<string, string | number | undefined> = {};
  for (const k of ["name", "issue", "run"]) {
    const v = body[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string" || v.length > 128 || !/^[A-Za-z0-9._-]+$/.test(v)) return `${k} must be 1-128 of [A-Za-z0-9._-]`;
    out[k] = v;
  }
  const ttl = body.ttl_s;
  if (ttl !== undefined && ttl !== null) {
    if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 1) return "ttl_s must be a whole number of seconds >= 1";
    out.ttl_s = ttl;
  }
  return out;
}

function execSpec(body: Record<string, unknown>): ExecSpec | string {
  const spec: ExecSpec = { has_stdin: body.has_stdin === true };
  const argv = body.argv ?? null;
  const script = body.script ?? null;
  if ((argv === null) === (script === null)) return "give exactly one of argv (a list) and script (a string)";
  if (script !== null) {
    if (typeof script !== "string") return "script must be a string";
    spec.script = script;
  } else {
    if (!Array.isArray(argv) || argv.length === 0) return "argv must be a non-empty list of strings";
    for (const a of argv) if (typeof a !== "string" || a.includes("\u0000")) return "argv must be a list of strings without NUL";
    spec.argv = argv as string[];
  }
  const env = body.env ?? null;
  if (env !== null) {
    if (typeof env !== "object" || Array.isArray(env)) return "env must be an object of strings";
    for (const [k, v] of Object.entries(env as Record<string, unknown>)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== "string") return "env must map variable names to strings";
    }
    spec.env = env as Record<string, string>;
  }
  const cwd = body.cwd ?? null;
  if (cwd !== null) {
    if (typeof cwd !== "string") return "cwd must be a string";
    spec.cwd = cwd;
  }
  for (const k of ["timeout_ms", "kill_grace_ms"] as const) {
    const v = body[k] ?? null;
    if (v === null) continue;
    if (typeof v !== "number" || v < 0) return `${k} must be a number >= 0`;
    spec[k] = Math.floor(v);
  }
  return spec;
}

function parseJson(body: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(new TextDecoder().decode(body));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

export async function handle(request: Request, env: Env): Promise<Response> {
  const ctx: Ctx = { request, config: undefined, auth: undefined, lease: undefined, route: undefined, argv0: undefined, bytesIn: 0, t0: Date.now() };
  try {
    return await dispatch(ctx, env);
  } catch (e) {
    console.error(`ferry bridge: ${request.method} ${request.url}: ${(e as Error).stack ?? e}`);
    return fail(ctx, 500, "internal", "internal error");
  }
}

async function dispatch(ctx: Ctx, env: Env): Promise<Response> {
  const request = ctx.request;
  let config: Config;
  try {
    config = await loadConfig(env);
  } catch (e) {
    return fail(ctx, 500, "internal", `the bridge is not configured: ${(e as Error).message}`);
  }
  const url = new URL(request.url);
  const path = url.pathname + url.search;
  let headerBytes = path.length;
  request.headers.forEach((v, k) => (headerBytes += k.length + v.length + 4));
  if (headerBytes > MAX_HEADER) return fail(ctx, 413, "too_large", `the request's headers are over ${MAX_HEADER} bytes`);
  const body = await readBody(request);
  if (!body) return fail(ctx, 413, "too_large", `the request's body is over ${MAX_CHUNK} bytes`);
  ctx.bytesIn = body.length;
  const r = route(config.prefix, request.method, url.pathname);
  const chain = typeof r === "object" && r.name === "stdin" ? request.headers.get("x-ferry-chain") ?? "" : "";
  const now = Math.floor(Date.now() / 1000);
  const v = await verify({ method: request.method, path, host: url.host, headers: request.headers, body }, config, chain, now);
  if (refused(v)) return fail(ctx, v.status, v.code, v.message);
  ctx.auth = v;
  const checked = await call(coordinator(env), "/authorize", {
    key: v.key.id, nonce: v.nonce, time: v.time, lease: typeof r === "object" ? r.leaseId : undefined,
  });
  if (checked.status !== 200) return fail(ctx, checked.status, String(checked.body.error), String(checked.body.message));
  if (typeof r !== "object") {
    const method = r === "method";
    return fail(ctx, method ? 405 : 404, method ? "method_not_allowed" : "not_found", `no route ${request.method} ${path.slice(0, 200)}`);
  }
  ctx.route = r.pattern;
  ctx.lease = checked.body.lease as PublicLease | undefined;
  return HANDLERS[r.name](ctx, env, r, body, config);
}

type Handler = (ctx: Ctx, env: Env, r: Route, body: Uint8Array, config: Config) => Promise<Response>;

const HANDLERS: Record<string, Handler> = {
  health: async (ctx, _env, _r, _body, config) => respond(ctx, 200, {
    ok: true, protocol: VERSION, server: "ferry-bridge-worker", time: Math.floor(Date.now() / 1000),
    public_host: config.publicHost, max_chunk: MAX_CHUNK,
  }),

  acquire: async (ctx, env, _r, body) => {
    const json = parseJson(body);
    if (!json) return fail(ctx, 400, "bad_request", "the body must be a JSON object");
    const f = labels(json);
    if (typeof f === "string") return fail(ctx, 400, "bad_request", f);
    const res = await call(coordinator(env), "/acquire", { key: ctx.auth!.key.id, ...f });
    ctx.lease = res.body.lease as PublicLease | undefined;
    return respond(ctx, res.status, res.body);
  },

  list: async (ctx, env) => {
    const res = await call(coordinator(env), "/list", { key: ctx.auth!.key.id });
    return respond(ctx, res.status, res.body);
  },

  get: async (ctx) => respond(ctx, 200, { lease: ctx.lease }),

  renew: async (ctx, env, r, body) => {
    const json = body.length === 0 ? {} : parseJson(body);
    if (!json) return fail(ctx, 400, "bad_request", "the body must be a JSON object");
    const ttl = json.ttl_s ?? null;
    if (ttl !== null && (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 1)) {
      return fail(ctx, 400, "bad_request", "ttl_s must be a whole number of seconds >= 1");
    }
    const res = await call(coordinator(env), "/renew", { key: ctx.auth!.key.id, lease: r.leaseId, ttl_s: ttl ?? undefined });
    return respond(ctx, res.status, res.body);
  },

  release: async (ctx, env, r) => {
    const res = await call(coordinator(env), "/release", { key: ctx.auth!.key.id, lease: r.leaseId });
    return respond(ctx, res.status, res.body);
  },

  exec: async (ctx, env, r, body) => {
    const json = parseJson(body);
    if (!json) return fail(ctx, 400, "bad_request", "the body must be a JSON object");
    const spec = execSpec(json);
    if (typeof spec === "string") return fail(ctx, 400, "bad_request", spec);
    ctx.argv0 = spec.argv ? spec.argv[0] : "sh";
    const res = await call(leaseObject(env, r.leaseId!), "/exec", { lease: ctx.lease, sig: ctx.auth!.sigHex, spec });
    return respond(ctx, res.status, res.body);
  },

  output: async (ctx, env, r) => {
    const q = new URLSearchParams({
      exec: r.execId!, lease: r.leaseId!, key: ctx.auth!.key.id, sig: ctx.auth!.sigHex,
      audit: JSON.stringify({ ...auditRecord(ctx), status: 200, bytes_in: 0 }),
    });
    const res = await leaseObject(env, r.leaseId!).fetch("https://internal/output?" + q.toString());
    if (res.status !== 200) return respond(ctx, res.status, await res.json());
    return res; // the lease's object writes the stream's audit line when it ends
  },

  stdin: async (ctx, env, r, body) => {
    const url = new URL(ctx.request.url);
    const seq = /(?:^|&)seq=(\d+)/.exec(url.search.slice(1));
    if (!seq) return fail(ctx, 400, "bad_request", "the stdin route needs ?seq=N");
    const q = new URLSearchParams({
      exec: r.execId!, lease: r.leaseId!, seq: seq[1], eof: /(?:^|&)eof=1(?:&|$)/.test(url.search.slice(1)) ? "1" : "0",
      sig: ctx.auth!.sigHex, chain: ctx.request.headers.get("x-ferry-chain") ?? "",
    });
    const res = await leaseObject(env, r.leaseId!).fetch("https://internal/stdin?" + q.toString(), { method: "PUT", body });
    return respond(ctx, res.status, await res.json());
  },

  kill: async (ctx, env, r) => {
    const q = new URLSearchParams({ exec: r.execId!, lease: r.leaseId! });
    const res = await leaseObject(env, r.leaseId!).fetch("https://internal/kill?" + q.toString(), { method: "POST" });
    return respond(ctx, res.status, await res.json());
  },
};

