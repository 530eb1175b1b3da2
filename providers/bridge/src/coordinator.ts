// The coordinator Durable Object (FerryCoordinator, one instance named "coordinator"): the replay cache
// (nonces seen within the time window, per key) and the lease index (every lease's record: owner, name,
// labels, ttl, state). Both live in its storage, so they survive an eviction or a deploy; an in-memory copy
// answers at once (and makes check-and-set atomic). An alarm reaps expired leases: it asks each lease's
// object whether a command runs, and ends it (the sandbox destroyed) when none does; ended leases stay as
// tombstones for a week, so their owner hears "expired" rather than "not found".
// Internal routes, JSON in and out (the Worker verified the signature before calling):
//   POST /authorize {key, nonce, time, lease?}  the replay check, then the lease (owner's, active; renewed)
//   POST /acquire {key, name?, issue?, run?, ttl_s?}
//   POST /list {key}
//   POST /renew {key, lease, ttl_s?}
//   POST /release {key, lease}
import { MAX_NONCES, MAX_SKEW_S, newId } from "./protocol.js";
import type { Env, LeaseRecord, PublicLease, StateLike } from "./types.js";

const TOMBSTONE_S = 7 * 24 * 3600;

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function fail(status: number, code: string, message: string): Response {
  return json(status, { error: code, message });
}

export function publicLease(l: LeaseRecord): PublicLease {
  return {
    id: l.id, name: l.name, issue: l.issue, run: l.run, key: l.owner, state: l.state, ttl_s: l.ttl_s,
    created_at: l.created_at, expires_at: l.expires_at, remote_dir: l.remote_dir, scratch_dir: l.scratch_dir,
  };
}

export class FerryCoordinatorObject {
  private leases = new Map<string, LeaseRecord>();
  private nonces = new Map<string, number>(); // "key:nonce" -> when it may be forgotten (s)
  private ready: Promise<void>;
  readonly ttl: number;
  readonly maxLeases: number;
  now: () => number = () => Math.floor(Date.now() / 1000);

  constructor(private state: StateLike, private env: Env) {
    this.ttl = Math.max(1, Number(env.FERRY_LEASE_TTL ?? "3600") || 3600);
    this.maxLeases = Math.max(1, Number(env.FERRY_MAX_LEASES ?? "20") || 20);
    this.ready = state.blockConcurrencyWhile(async () => {
      for (const [, l] of await state.storage.list<LeaseRecord>({ prefix: "lease:" })) this.leases.set(l.id, l);
      const nonces = [...(await state.storage.list<number>({ prefix: "nonce:" }))].sort((a, b) => a[1] - b[1]);
      for (const [k, expires] of nonces) this.nonces.set(k.slice(6), expires);
    });
  }

  private save(l: LeaseRecord): Promise<void> {
    return this.state.storage.put("lease:" + l.id, l);
  }

  /** The lease of another object's id, from the template (FERRY_WORKSPACE, FERRY_SCRATCH). */
  private dirs(id: string): { remote_dir: string; scratch_dir: string } {
    const fill = (t: string) => t.split("{lease}").join(id);
    return { remote_dir: fill(this.env.FERRY_WORKSPACE ?? "/workspace"), scratch_dir: fill(this.env.FERRY_SCRATCH ?? "/tmp") };
  }

  private leaseObject(id: string) {
    return this.env.FERRY_LEASE.get(this.env.FERRY_LEASE.idFromName(id));
  }

  async fetch(request: Request): Promise<Response> {
    await this.ready;
    const url = new URL(request.url);
    const body = (await request.json()) as Record<string, unknown>;
    switch (url.pathname) {
      case "/authorize": return this.authorize(body);
      case "/acquire": return this.acquire(body);
      case "/list": return this.list(String(body.key));
      case "/renew": return this.renew(body);
      case "/release": return this.release(body);
    }
    return fail(404, "not_found", "no internal route " + url.pathname);
  }

  private prune(now: number): void {
    for (const [k, expires] of this.nonces) {
      if (expires > now) break; // in insertion order, which is expiry order
      this.nonces.delete(k);
      void this.state.storage.delete("nonce:" + k);
    }
  }

  private async authorize(b: Record<string, unknown>): Promise<Response> {
    const now = this.now();
    this.prune(now);
    const seen = `${b.key}:${b.nonce}`;
    if (this.nonces.has(seen)) return fail(401, "replayed_nonce", "this nonce was already used");
    if (this.nonces.size >= MAX_NONCES) return fail(429, "busy", "too many requests within the replay window; retry later");
    const expires = Math.max(now, Number(b.time)) + MAX_SKEW_S + 1; // kept until its time can no longer pass
    this.nonces.set(seen, expires);
    await this.state.storage.put("nonce:" + seen, expires);
    if (b.lease === undefined) return json(200, {});
    const lease = this.leases.get(String(b.lease));
    if (!lease || lease.owner !== b.key) return fail(404, "lease_not_found", `no lease ${b.lease}`);
    if (lease.state !== "active") {
      return fail(410, "lease_expired", `lease ${lease.id} ${lease.state === "released" ? "was released" : "expired"}`);
    }
    await this.touch(lease);
    return json(200, { lease: publicLease(lease) });
  }

  /** Push a lease's expiry to now + its ttl (stored when a ttl is given or it moved by a tenth of the ttl). */
  private async touch(lease: LeaseRecord, ttl?: number): Promise<void> {
    const now = this.now();
    if (ttl !== undefined) lease.ttl_s = Math.min(ttl, this.ttl);
    const expires = now + lease.ttl_s;
    const moved = expires - lease.expires_at;
    lease.renewed_at = now;
    lease.expires_at = expires;
    if (ttl !== undefined || moved * 10 >= lease.ttl_s) await this.save(lease);
    await this.arm();
  }

  private async arm(): Promise<void> {
    if ((await this.state.storage.getAlarm()) === null) {
      await this.state.storage.setAlarm(Date.now() + Math.max(500, Math.min(30000, this.ttl * 250)));
    }
  }

  private activeCount(): number {
    let n = 0;
    for (const l of this.leases.values()) if (l.state === "active") n++;
    return n;
  }

  private async acquire(b: Record<string, unknown>): Promise<Response> {
    const key = String(b.key);
    const ttl = typeof b.ttl_s === "number" ? b.ttl_s : undefined;
    if (typeof b.name === "string") {
      for (const l of this.leases.values()) {
        if (l.state === "active" && l.owner === key && l.name === b.name) {
          await this.touch(l, ttl);
          return json(200, { lease: { ...publicLease(l), recovered: true } });
        }
      }
    }
    if (this.activeCount() >= this.maxLeases) {
      return fail(429, "too_many_leases", `the bridge holds ${this.maxLeases} leases, its maximum`);
    }
    const id = newId(10);
    const now = this.now();
    const lifetime = Math.min(ttl ?? this.ttl, this.ttl);
    const lease: LeaseRecord = {
      id, owner: key, name: b.name as string | undefined, issue: b.issue as string | undefined, run: b.run as string | undefined,
      ttl_s: lifetime, created_at: now, renewed_at: now, expires_at: now + lifetime, state: "active", ...this.dirs(id),
    };
    this.leases.set(id, lease);
    await this.save(lease);
    const opened = await this.leaseObject(id).fetch("https://lease/open", {
      method: "POST", body: JSON.stringify({ lease: publicLease(lease) }),
    });
    if (!opened.ok) {
      const why = ((await opened.json().catch(() => ({}))) as { message?: string }).message ?? `status ${opened.status}`;
      await this.finishLease(lease, "released");
      return fail(503, "sandbox_unavailable", `the sandbox did not open: ${why}`);
    }
    await this.arm();
    return json(201, { lease: { ...publicLease(lease), recovered: false } });
  }

  private list(key: string): Response {
    const mine = [...this.leases.values()].filter((l) => l.owner === key);
    mine.sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1));
    return json(200, { leases: mine.map(publicLease) });
  }

  private async renew(b: Record<string, unknown>): Promise<Response> {
    const lease = this.leases.get(String(b.lease));
    if (!lease) return fail(404, "lease_not_found", `no lease ${b.lease}`);
    await this.touch(lease, typeof b.ttl_s === "number" ? b.ttl_s : lease.ttl_s);
    return json(200, { lease: publicLease(lease) });
  }

  private async finishLease(lease: LeaseRecord, state: "released" | "expired"): Promise<void> {
    lease.state = state;
    lease.ended_at = this.now();
    await this.save(lease);
  }

  private async release(b: Record<string, unknown>): Promise<Response> {
    const lease = this.leases.get(String(b.lease));
    if (!lease) return fail(404, "lease_not_found", `no lease ${b.lease}`);
    await this.finishLease(lease, "released");
    await this.leaseObject(lease.id).fetch("https://lease/end", {
      method: "POST", body: JSON.stringify({ lease: lease.id, reason: "the lease ended" }),
    });
    return json(200, { released: true, lease: publicLease(lease) });
  }

  /** The reaper: end expired leases with no command running; forget old tombstones and nonces. */
  async alarm(): Promise<void> {
    await this.ready;
    const now = this.now();
    this.prune(now);
    let active = false;
    for (const lease of [...this.leases.values()]) {
      if (lease.state === "active" && lease.expires_at < now) {
        const answer = await this.leaseObject(lease.id).fetch("https://lease/reap", {
          method: "POST", body: JSON.stringify({ lease: lease.id }),
        });
        const { busy } = (await answer.json().catch(() => ({ busy: true }))) as { busy?: boolean };
        if (busy) active = true;
        else await this.finishLease(lease, "expired");
      } else if (lease.state === "active") {
        active = true;
      } else if ((lease.ended_at ?? 0) + TOMBSTONE_S < now) {
        this.leases.delete(lease.id);
        await this.state.storage.delete("lease:" + lease.id);
      }
    }
    if (active || this.nonces.size > 0) {
      await this.state.storage.setAlarm(Date.now() + Math.max(500, Math.min(30000, this.ttl * 250)));
    }
  }
}
