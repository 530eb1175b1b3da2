// Runs the bridge Worker under plain Node 20, without Cloudflare: its fetch handler served over node:http
// on loopback, its Durable Objects in memory (test/memory_do.mjs), and each lease's sandbox a LocalSandbox
// (test/local_sandbox.mjs) running commands on this host under ROOT/sb/<lease>. ferry's specs start it
// like `ferry bridge serve` (spec/support/bridge.lua) and run the same protocol conformance specs on both.
//
//   node harness.mjs --dist DIR --listen 127.0.0.1:0 --key ID=FILE... --root DIR [--public-host H]
//        [--prefix /P] [--lease-ttl SEC] [--max-leases N] [--audit-log FILE] [--state FILE]
//
// DIR holds the compiled Worker (tsc output: worker.js, lease.js, coordinator.js ...; index.js, which imports
// the SDK, is not loaded). Prints "ferry bridge (worker): listening on HOST:PORT as PUBLIC" on stderr.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { Readable } from "node:stream";
import { pathToFileURL } from "node:url";
import { LocalSandbox } from "./local_sandbox.mjs";
import { MemoryNamespace } from "./memory_do.mjs";

function parseArgs(argv) {
  const o = { keys: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--key") o.keys.push(value);
    else o[flag.replace(/^--/, "").replace(/-/g, "_")] = value;
  }
  for (const need of ["dist", "listen", "root"]) if (!o[need]) throw new Error(`missing --${need}`);
  if (o.keys.length === 0) throw new Error("missing --key ID=FILE");
  return o;
}

// A key file as ferry reads it: its bytes without one trailing newline; as a FERRY_KEYS value, the text when
// it is UTF-8, else "base64:...".
function keysJson(list) {
  const keys = {};
  for (const word of list) {
    const [, id, file] = /^([^=]+)=(.+)$/.exec(word) ?? [];
    if (!id) throw new Error(`--key expects ID=FILE, got '${word}'`);
    const bytes = fs.readFileSync(file).toString("latin1").replace(/\r?\n$/, "");
    const buf = Buffer.from(bytes, "latin1");
    const text = buf.toString("utf8");
    keys[id] = Buffer.from(text, "utf8").equals(buf) ? text : "base64:" + buf.toString("base64");
  }
  return JSON.stringify(keys);
}

// Node 18 has WebCrypto, but not yet as a global (Workers and Node 20 do)
if (!globalThis.crypto) globalThis.crypto = (await import("node:crypto")).webcrypto;

const o = parseArgs(process.argv.slice(2));
const dist = path.resolve(o.dist);
const load = (name) => import(pathToFileURL(path.join(dist, name)).href);
const { handle } = await load("worker.js");
const { FerryLeaseObject } = await load("lease.js");
const { FerryCoordinatorObject } = await load("coordinator.js");

if (o.audit_log) {
  const out = fs.openSync(o.audit_log, "a");
  console.log = (...args) => fs.writeSync(out, args.join(" ") + "\n");
} else {
  console.log = () => {};
}

const root = path.resolve(o.root);
const [host, portText] = o.listen.split(/:(?=\d+$)/);
const env = {
  FERRY_KEYS: keysJson(o.keys),
  FERRY_PREFIX: o.prefix ?? "",
  FERRY_LEASE_TTL: o.lease_ttl ?? "3600",
  FERRY_MAX_LEASES: o.max_leases ?? "100",
  FERRY_WORKSPACE: path.join(root, "sb", "{lease}", "workspace"),
  FERRY_SCRATCH: path.join(root, "sb", "{lease}", "tmp"),
};
const sandboxFor = (_env, lease) => new LocalSandbox(path.join(root, "sb", lease));
env.FERRY_LEASE = new MemoryNamespace("lease", (state) => new FerryLeaseObject(state, env, { sandboxFor }));
env.FERRY_COORDINATOR = new MemoryNamespace("coordinator", (state) => new FerryCoordinatorObject(state, env), o.state);

// The request body as a stream that asks for it (100 Continue) only when the Worker reads it, as an edge
// does: a body the Worker refuses unread (413) never travels.
function bodyOf(req, res, expectsContinue) {
  const source = Readable.toWeb(req).getReader();
  let asked = !expectsContinue;
  return new ReadableStream({
    async pull(controller) {
      if (!asked) {
        asked = true;
        res.writeContinue();
      }
      const { done, value } = await source.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: () => source.cancel(),
  });
}

async function serve(req, res, expectsContinue) {
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  const request = new Request(`http://${req.headers.host ?? o.listen}${req.url}`, {
    method: req.method,
    headers: Object.entries(req.headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]])),
    body: hasBody ? bodyOf(req, res, expectsContinue) : undefined,
    duplex: hasBody ? "half" : undefined,
  });
  let response;
  try {
    response = await handle(request, env);
  } catch (e) {
    response = new Response(JSON.stringify({ error: "internal", message: String(e) }), { status: 500 });
  }
  const headers = Object.fromEntries(response.headers);
  if (response.status === 413) headers.connection = "close"; // its body may be unread
  res.writeHead(response.status, headers);
  if (!response.body) return res.end();
  const reader = response.body.getReader();
  res.on("close", () => {
    if (!res.writableFinished) reader.cancel().catch(() => {}); // the client went away: the stream is cancelled
  });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!res.write(value)) await new Promise((resolve) => res.once("drain", resolve).once("close", resolve));
      if (res.destroyed) break;
    }
  } catch {}
  res.end();
}

const server = http.createServer({ maxHeaderSize: 64 * 1024, keepAliveTimeout: 10000 }, (req, res) => serve(req, res, false));
server.on("checkContinue", (req, res) => serve(req, res, true));
server.headersTimeout = 10000;
server.requestTimeout = 0;
server.listen(Number(portText), host, () => {
  const port = server.address().port;
  env.FERRY_PUBLIC_HOST = o.public_host ?? `${host}:${port}`;
  process.stderr.write(`ferry bridge (worker): listening on ${host}:${port} as ${env.FERRY_PUBLIC_HOST}\n`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
