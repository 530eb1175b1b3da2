// One command of a lease (README "Bridge", "Stdin", "The output stream"), on the Sandbox SDK. Stdin chunks
// are staged as files in the sandbox (writeFile, base64) in sequence order, and the command starts once the
// EOF chunk is in (at once without stdin): the SDK's exec has no stdin. Output comes from the runner
// (runner.ts) as base64 lines, decoded into stdout/stderr frames with chained MACs; the stream is pulled by
// the client, and the runner's stream is read only while less than HIGH_WATER bytes wait (backpressure).
import {
  EXIT, FrameWriter, KEEPALIVE, MAX_FRAME, STDERR, STDIN_WINDOW, STDOUT, base64Decode, base64Encode, concat, encoder,
  signalName,
  type FrameKind,
} from "./protocol.js";
import { parseRunnerLine, runnerCommand } from "./runner.js";
import type { ExecSpec, SandboxLike } from "./types.js";

export const KEEPALIVE_MS = 1000;
export const ATTACH_TIMEOUT_MS = 30000;
export const HOLD_MS = 30000;
const HIGH_WATER = 1024 * 1024;
const WRITE_BATCH = 256 * 1024;
const DEFAULT_GRACE_MS = 2000;

/** A promise-based wake-up: wait(ms) resolves true on notify(), false after ms. */
export class Signal {
  private waiters: Array<(woken: boolean) => void> = [];
  notify(): void {
    const list = this.waiters;
    this.waiters = [];
    for (const w of list) w(true);
  }
  wait(ms?: number): Promise<boolean> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (woken: boolean) => {
        if (timer !== undefined) clearTimeout(timer);
        resolve(woken);
      };
      this.waiters.push(done);
      if (ms !== undefined) {
        timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== done);
          resolve(false);
        }, ms);
      }
    });
  }
}

export interface ExitRecord {
  code: number | null;
  signal: string | null;
  timed_out: boolean;
  duration_ms?: number;
  error?: string;
}

type Answer = [number, Record<string, unknown>];

export class Exec {
  readonly id: string;
  chain: string;
  nextSeq = 0;
  finished = false;
  attached = false;
  result: ExitRecord | undefined;
  bytesIn = 0;
  bytesOut = 0;
  onFinish: (() => void) | undefined;
  private holding = new Set<number>();
  private files: string[] = [];
  private writes: Promise<unknown>[] = [];
  private stdinEof = false;
  private started = false;
  private pid: number | undefined;
  private killReason: string | undefined;
  private queue: Array<[FrameKind, Uint8Array]> = [];
  private queued = 0;
  private changed = new Signal(); // output queued, or the exec finished
  private drained = new Signal(); // the queue went below HIGH_WATER
  private order = new Signal(); // nextSeq moved, or the exec finished
  private attachTimer: ReturnType<typeof setTimeout>;
  private startedAt = Date.now();

  constructor(id: string, private spec: ExecSpec, private sandbox: SandboxLike, private stagingDir: string, chain: string) {
    this.id = id;
    this.chain = chain;
    this.attachTimer = setTimeout(() => {
      if (!this.attached) void this.kill("no client read the output");
    }, ATTACH_TIMEOUT_MS);
  }

  /** Begin: stage the stdin dir, or start the command now when there is no stdin. */
  async begin(): Promise<void> {
    if (this.spec.has_stdin) {
      await this.sandbox.mkdir(this.stagingDir, { recursive: true });
    } else {
      this.start();
    }
  }

  private push(kind: FrameKind, payload: Uint8Array): void {
    for (let at = 0; at < payload.length; at += MAX_FRAME) {
      const part = payload.subarray(at, at + MAX_FRAME);
      this.queue.push([kind, part]);
      this.queued += part.length;
      this.bytesOut += part.length;
    }
    this.changed.notify();
  }

  private finish(result: ExitRecord): void {
    if (this.finished) return;
    if (this.killReason) result.error = this.killReason;
    this.result = result;
    this.finished = true;
    clearTimeout(this.attachTimer);
    this.changed.notify();
    this.order.notify();
    this.drained.notify();
    this.onFinish?.();
  }

  /** Run the command through the runner and turn its lines into frames. */
  private start(): void {
    if (this.started) return;
    this.started = true;
    void this.run().catch((e: unknown) => {
      this.finish({ error: `the sandbox did not run the command: ${(e as Error).message ?? e}`, code: null, signal: null, timed_out: false });
    });
  }

  private async run(): Promise<void> {
    if (this.killReason) return this.finish({ code: null, signal: null, timed_out: false });
    const spec = this.spec;
    const command = runnerCommand({
      argv: spec.argv ?? ["sh", "-c", spec.script ?? ""], cwd: spec.cwd ?? "/", timeoutMs: spec.timeout_ms ?? 0,
      graceMs: spec.kill_grace_ms ?? DEFAULT_GRACE_MS, stdinFiles: spec.has_stdin ? this.files : null,
      stagingDir: spec.has_stdin ? this.stagingDir : undefined,
    });
    const stream = await this.sandbox.execStream(command, { env: spec.env });
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let sse = "";
    let partial = "";
    let exit: ExitRecord | undefined;
    let failure: string | undefined;
    const onLine = (line: string) => {
      const l = parseRunnerLine(line);
      if (l.kind === "o" || l.kind === "e") {
        const bytes = base64Decode(l.data);
        if (bytes) this.push(l.kind === "o" ? STDOUT : STDERR, bytes);
      } else if (l.kind === "pid") {
        this.pid = l.pid;
        if (this.killReason) void this.signalGroup();
      } else if (l.kind === "exit") {
        exit = { code: l.code, signal: l.signal ? signalName(l.signal) : null, timed_out: l.timedOut, duration_ms: Date.now() - this.startedAt };
      } else if (l.kind === "other" && l.text !== "") {
        this.push(STDERR, encoder.encode(l.text + "\n"));
      }
    };
    const onEvent = (data: string) => {
      let ev: { type?: string; data?: string; error?: string; exitCode?: number };
      try {
        ev = JSON.parse(data);
      } catch {
        return;
      }
      if (ev.type === "stdout" && typeof ev.data === "string") {
        const lines = (partial + ev.data).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) onLine(line);
      } else if (ev.type === "stderr" && typeof ev.data === "string") {
        this.push(STDERR, encoder.encode(ev.data)); // the runner's own complaints (perl missing, ...)
      } else if (ev.type === "error") {
        failure = ev.error ?? "the sandbox reported an error";
      } else if (ev.type === "complete" && !exit && failure === undefined) {
        failure = `the command's runner ended without an exit status (exit ${ev.exitCode ?? "?"})`;
      }
    };
    for (;;) {
      while (this.queued > HIGH_WATER && !this.finished) await this.drained.wait();
      const { done, value } = await reader.read();
      if (done) break;
      sse += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = sse.indexOf("\n\n")) >= 0) {
        const frame = sse.slice(0, end);
        sse = sse.slice(end + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) onEvent(data);
      }
    }
    if (partial) onLine(partial);
    if (exit) this.finish(exit);
    else this.finish({ error: failure ?? "the command's output ended without an exit status", code: null, signal: null, timed_out: false });
  }

  private async signalGroup(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    // the group first (the runner made the command its leader); "kill -9 -PID": dash has no "kill --"
    await this.sandbox.exec(`kill -9 -${pid} 2>/dev/null; kill -9 ${pid} 2>/dev/null; true`).catch(() => undefined);
  }

  /** Kill the command (the client asked, went away, or the lease ended). */
  async kill(why: string): Promise<void> {
    if (this.finished) return;
    this.killReason = this.killReason ?? why;
    this.stdinEof = true;
    this.order.notify();
    if (!this.started) {
      this.finish({ code: null, signal: null, timed_out: false });
      void this.sandbox.exec(`rm -rf -- '${this.stagingDir}'`).catch(() => undefined);
      return;
    }
    await this.signalGroup();
  }

  private async waitTurn(seq: number): Promise<void> {
    const deadline = Date.now() + HOLD_MS;
    while (this.nextSeq !== seq && !this.finished && Date.now() < deadline) await this.order.wait(deadline - Date.now());
  }

  /** One stdin chunk request: the same rules as ferry's server (execs.lua). */
  async stdin(seq: number, eof: boolean, body: Uint8Array, sigHex: string, chain: string): Promise<Answer> {
    if (!this.spec.has_stdin) return [409, { error: "no_stdin", message: "this exec was created without stdin" }];
    if (seq < this.nextSeq || seq >= this.nextSeq + STDIN_WINDOW || this.holding.has(seq)) {
      return [409, { error: "bad_sequence", message: `expected stdin chunk ${this.nextSeq} (or up to ${STDIN_WINDOW - 1} ahead), got ${seq}` }];
    }
    if (seq > this.nextSeq) {
      this.holding.add(seq);
      await this.waitTurn(seq);
      this.holding.delete(seq);
      if (this.nextSeq !== seq) {
        if (this.finished) return [200, { accepted: false, finished: true }];
        return [409, { error: "bad_sequence", message: `stdin chunk ${seq} came, chunk ${this.nextSeq} never did` }];
      }
    }
    if (chain !== this.chain) {
      return [401, { error: "bad_signature", message: `stdin chunk ${seq} is not chained to chunk ${seq - 1}` }];
    }
    this.nextSeq = seq + 1;
    this.chain = sigHex;
    const taken = !(this.finished || this.stdinEof);
    let write: Promise<unknown> | undefined;
    if (taken) {
      this.bytesIn += body.length;
      if (body.length > 0) {
        const file = `${this.stagingDir}/in.${String(seq).padStart(8, "0")}`;
        this.files.push(file);
        write = this.sandbox.writeFile(file, base64Encode(body), { encoding: "base64" });
        this.writes.push(write.catch(() => undefined));
      }
      if (eof) this.stdinEof = true;
    }
    this.order.notify();
    if (!taken) return [200, { accepted: false, finished: this.finished }];
    try {
      await write;
    } catch (e) {
      await this.kill(`stdin could not be staged in the sandbox: ${(e as Error).message ?? e}`);
      return [503, { error: "sandbox_unavailable", message: `stdin could not be staged in the sandbox: ${(e as Error).message ?? e}` }];
    }
    if (eof && !this.finished) {
      await Promise.all(this.writes);
      this.start();
    }
    return [200, { accepted: !this.finished, received: body.length }];
  }

  private async takeFrames(writer: FrameWriter): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let size = 0;
    while (this.queue.length > 0 && size < WRITE_BATCH) {
      const [kind, payload] = this.queue.shift()!;
      this.queued -= payload.length;
      const frame = await writer.frame(kind, payload);
      parts.push(frame);
      size += frame.length;
    }
    if (this.queued <= HIGH_WATER) this.drained.notify();
    return parts.length === 1 ? parts[0] : concat(parts);
  }

  /** The output stream: frames chained on `seed` (the raw signature of the output request), pulled by the
   *  client; a keepalive after a second without output; the exit frame last. A client that goes away (the
   *  stream is cancelled) kills the command. `onEnd` runs once with the stream's end. */
  stream(key: CryptoKey, seed: Uint8Array, onEnd: (completed: boolean) => void): ReadableStream<Uint8Array> {
    this.attached = true;
    clearTimeout(this.attachTimer);
    const writer = new FrameWriter(key, seed);
    let ended = false;
    const end = (completed: boolean) => {
      if (!ended) {
        ended = true;
        onEnd(completed);
      }
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        for (;;) {
          if (this.queue.length > 0) {
            controller.enqueue(await this.takeFrames(writer));
            return;
          }
          if (this.finished) {
            controller.enqueue(await writer.frame(EXIT, encoder.encode(JSON.stringify(this.result))));
            controller.close();
            end(true);
            return;
          }
          const woken = await this.changed.wait(KEEPALIVE_MS);
          if (!woken && this.queue.length === 0 && !this.finished) {
            controller.enqueue(await writer.frame(KEEPALIVE, new Uint8Array(0)));
            return;
          }
        }
      },
      cancel: async () => {
        end(false);
        await this.kill("the client went away");
      },
    }, { highWaterMark: 0 });
  }
}
