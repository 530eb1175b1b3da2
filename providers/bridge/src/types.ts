// What the bridge's code needs from the platform, as interfaces: index.ts hands it the real Durable Objects and
// the Cloudflare Sandbox SDK; the Node test harness (test/harness.mjs) hands it in-memory storage and a
// sandbox running commands on the host. Nothing here imports the SDK or `cloudflare:workers`.

/** The part of the Sandbox SDK's sandbox (0.12, `getSandbox(ns, id)`) the bridge uses. */
export interface SandboxLike {
  /** Run a shell command; the stream is the SDK's SSE of ExecEvent JSON (start, stdout, stderr, complete, error). */
  execStream(command: string, options?: { env?: Record<string, string | undefined> }): Promise<ReadableStream<Uint8Array>>;
  /** Run a shell command to its end. */
  exec(command: string, options?: { env?: Record<string, string | undefined> }): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  /** Write a file; with encoding "base64" the content is base64 of the bytes. */
  writeFile(path: string, content: string, options?: { encoding?: string }): Promise<unknown>;
  mkdir(path: string, options?: { recursive?: boolean }): Promise<unknown>;
  /** Stop the container and drop its disk. */
  destroy(): Promise<void>;
}

/** The sandbox of a lease: `getSandbox(env.Sandbox, leaseId, ...)` on Cloudflare. */
export type SandboxFor = (env: Env, leaseId: string) => SandboxLike;

/** The part of a Durable Object's storage the bridge uses (the key-value API). */
export interface StorageLike {
  get<T = unknown>(key: string): Promise<T | undefined>;
  put<T>(key: string, value: T): Promise<void>;
  delete(key: string): Promise<boolean>;
  list<T = unknown>(options?: { prefix?: string }): Promise<Map<string, T>>;
  getAlarm(): Promise<number | null>;
  setAlarm(scheduledTime: number): Promise<void>;
}

export interface StateLike {
  storage: StorageLike;
  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T>;
}

export interface StubLike {
  fetch(input: string, init?: RequestInit): Promise<Response>;
}

export interface NamespaceLike {
  idFromName(name: string): unknown;
  get(id: unknown): StubLike;
}

/** The Worker's bindings (wrangler.jsonc: vars, secrets, durable_objects). */
export interface Env {
  /** Secret: JSON {"key id": "secret"}; a secret is the text of the client's key file (>= 32 bytes), or
   *  "base64:..." for a binary one. */
  FERRY_KEYS?: string;
  /** The Host every request must carry and be signed for, e.g. "ferry-bridge.example.workers.dev". */
  FERRY_PUBLIC_HOST?: string;
  /** Serve under PREFIX/v1 ("" by default). */
  FERRY_PREFIX?: string;
  /** A lease's ttl in seconds, and the most a client may ask for (default 3600). */
  FERRY_LEASE_TTL?: string;
  /** Active leases at most (default 20). */
  FERRY_MAX_LEASES?: string;
  /** A lease's remote dir in its sandbox; "{lease}" is replaced by the lease id (default /workspace). */
  FERRY_WORKSPACE?: string;
  /** A lease's scratch dir (stdin is staged below it; default /tmp). */
  FERRY_SCRATCH?: string;
  FERRY_COORDINATOR: NamespaceLike;
  FERRY_LEASE: NamespaceLike;
}

/** A lease as the coordinator records it. */
export interface LeaseRecord {
  id: string;
  owner: string;
  name?: string;
  issue?: string;
  run?: string;
  ttl_s: number;
  created_at: number;
  renewed_at: number;
  expires_at: number;
  ended_at?: number;
  state: "active" | "expired" | "released";
  remote_dir: string;
  scratch_dir: string;
}

/** A lease as the protocol shows it. */
export interface PublicLease {
  id: string;
  name?: string;
  issue?: string;
  run?: string;
  key: string;
  state: string;
  ttl_s: number;
  created_at: number;
  expires_at: number;
  remote_dir: string;
  scratch_dir: string;
  recovered?: boolean;
}

/** What a command is: the body of POST /v1/leases/L/execs, checked. */
export interface ExecSpec {
  argv?: string[];
  script?: string;
  env?: Record<string, string>;
  cwd?: string;
  timeout_ms?: number;
  kill_grace_ms?: number;
  has_stdin: boolean;
}
