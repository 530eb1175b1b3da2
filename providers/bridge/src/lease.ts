// The Durable Object of one lease (FerryLease, named by the lease id): its running commands and their
// output streams live here, in memory, since every request about them reaches this one object; the lease's
// sandbox is the SDK's Sandbox Durable Object of the same id. The Worker (worker.ts) has verified the request
// and the coordinator the lease before anything arrives here. Internal routes, JSON in and out:
//   POST /open {lease}                 create the lease's dirs (starts the container)
//   POST /exec {lease, key, sig, spec} a new exec -> 201 {exec: {id}}
//   GET  /output?exec=&key=&sig=       the output stream
//   PUT  /stdin?exec=&seq=&eof=&sig=&chain=   a stdin chunk (raw body)
//   POST /kill?exec=                   kill an exec
//   POST /end {reason}                 kill everything, destroy the sandbox
//   POST /reap                         {busy}: whether a command runs (else the sandbox is destroyed)
import { loadConfig } from "./auth.js";
import { Exec } from "./exec.js";
import { newId, unhex } from "./protocol.js";
import type { Env, ExecSpec, PublicLease, SandboxFor, SandboxLike, StateLike } from "./types.js";

const EXEC_LINGER_MS = 60000; // a finished exec still answers its late stdin chunks this long

export interface LeaseDeps {
  sandboxFor: SandboxFor;
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

export class FerryLeaseObject {
  private execs = new Map<string, Exec & { leaseId?: string }>();
  private sandboxOf: SandboxLike | undefined;
  private leaseId: string | undefined;

  constructor(_state: StateLike, private env: Env, private deps: LeaseDeps) {}

  private sandbox(leaseId: string): SandboxLike {
    if (!this.sandboxOf || this.leaseId !== leaseId) {
      this.sandboxOf = this.deps.sandboxFor(this.env, leaseId);
      this.leaseId = leaseId;
    }
    return this.sandboxOf;
  }

  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const q = url.searchParams;
    try {
      switch (url.pathname) {
        case "/open": return await this.open((await request.json()) as { lease: PublicLease });
        case "/exec": return await this.exec((await request.json()) as { lease: PublicLease; sig: string; spec: ExecSpec });
        case "/output": return await this.output(q.get("exec") ?? "", q.get("lease") ?? "", q.get("key") ?? "", q.get("sig") ?? "", q.get("audit") ?? "{}");
        case "/stdin": return await this.stdin(q, new Uint8Array(await request.arrayBuffer()));
        case "/kill": return await this.kill(q.get("exec") ?? "", q.get("lease") ?? "");
        case "/end": return await this.end(((await request.json()) as { lease: string; reason: string }));
        case "/reap": return await this.reap((await request.json()) as { lease: string });
      }
      return json(404, { error: "not_found", message: "no internal route " + url.pathname });
    } catch (e) {
      return json(503, { error: "sandbox_unavailable", message: `the sandbox failed: ${(e as Error).message ?? e}` });
    }
  }

  private async open(body: { lease: PublicLease }): Promise<Response> {
    const sb = this.sandbox(body.lease.id);
    await sb.mkdir(body.lease.remote_dir, { recursive: true });
    await sb.mkdir(body.lease.scratch_dir, { recursive: true });
    return json(200, { ok: true });
  }

  private async exec(body: { lease: PublicLease; sig: string; spec: ExecSpec }): Promise<Response> {
    const id = newId(12);
    const staging = `${body.lease.scratch_dir}/.ferry-exec/${id}`;
    const exec: Exec & { leaseId?: string } = new Exec(id, body.spec, this.sandbox(body.lease.id), staging, body.sig);
    exec.leaseId = body.lease.id;
    this.execs.set(id, exec);
    exec.onFinish = () => setTimeout(() => this.execs.delete(id), EXEC_LINGER_MS);
    try {
      await exec.begin();
    } catch (e) {
      this.execs.delete(id);
      throw e;
    }
    return json(201, { exec: { id } });
  }

  private find(execId: string, leaseId: string): Exec | Response {
    const exec = this.execs.get(execId);
    if (!exec || exec.leaseId !== leaseId) {
      return json(404, { error: "exec_not_found", message: `no exec ${execId} on lease ${leaseId}` });
    }
    return exec;
  }

  private async output(execId: string, leaseId: string, keyId: string, sigHex: string, audit: string): Promise<Response> {
    const exec = this.find(execId, leaseId);
    if (exec instanceof Response) return exec;
    if (exec.attached) return json(409, { error: "output_taken", message: "the output of this exec is already being read" });
    const config = await loadConfig(this.env);
    const key = config.keys.get(keyId);
    const seed = unhex(sigHex);
    if (!key || !seed) return json(400, { error: "bad_request", message: "bad internal output request" });
    const t0 = Date.now();
    const body = exec.stream(key.key, seed, () => {
      // the audit line of a stream is written when it ends, with the exit code
      const record = JSON.parse(audit) as Record<string, unknown>;
      record.exit_code = exec.result?.code ?? null;
      record.bytes_out = exec.bytesOut;
      record.duration_ms = Date.now() - t0;
      console.log(JSON.stringify(record));
    });
    return new Response(body, { status: 200, headers: { "content-type": "application/x-ferry-frames", "cache-control": "no-store" } });
  }

  private async stdin(q: URLSearchParams, body: Uint8Array): Promise<Response> {
    const exec = this.find(q.get("exec") ?? "", q.get("lease") ?? "");
    if (exec instanceof Response) return exec;
    const [status, answer] = await exec.stdin(Number(q.get("seq")), q.get("eof") === "1", body, q.get("sig") ?? "", q.get("chain") ?? "");
    return json(status, answer);
  }

  private async kill(execId: string, leaseId: string): Promise<Response> {
    const exec = this.find(execId, leaseId);
    if (exec instanceof Response) return exec;
    const running = !exec.finished;
    await exec.kill("killed by the client");
    return json(200, { killed: running });
  }

  private running(): boolean {
    for (const exec of this.execs.values()) if (!exec.finished) return true;
    return false;
  }

  private async end(body: { lease: string; reason: string }): Promise<Response> {
    await Promise.all([...this.execs.values()].map((e) => e.kill(body.reason)));
    await this.sandbox(body.lease).destroy();
    this.sandboxOf = undefined;
    return json(200, { ok: true });
  }

  private async reap(body: { lease: string }): Promise<Response> {
    if (this.running()) return json(200, { busy: true });
    await this.sandbox(body.lease).destroy();
    this.sandboxOf = undefined;
    return json(200, { busy: false });
  }
}
