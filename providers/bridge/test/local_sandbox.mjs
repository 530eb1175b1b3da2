// A sandbox for the Node harness with the Sandbox SDK's methods (the part the bridge uses), running commands
// on this host with child_process: real processes and real bytes. Like the SDK, execStream answers with SSE
// of ExecEvent JSON and hands output over as UTF-8-decoded text (bytes that are not UTF-8 are mangled), so
// the bridge's runner must carry bytes itself. Every lease's files are under ROOT/sb/<lease>.
import { spawn } from "node:child_process";
import fs from "node:fs/promises";

const enc = new TextEncoder();

function sse(event) {
  return enc.encode(`data: ${JSON.stringify({ timestamp: new Date().toISOString(), ...event })}\n\n`);
}

export class LocalSandbox {
  constructor(root) {
    this.root = root;
    this.children = new Set();
  }

  spawn(command, env) {
    const child = spawn("sh", ["-c", command], {
      env: { ...process.env, ...env }, cwd: "/", stdio: ["ignore", "pipe", "pipe"], detached: true,
    });
    this.children.add(child);
    child.on("exit", () => this.children.delete(child));
    return child;
  }

  async execStream(command, options = {}) {
    const child = this.spawn(command, options.env);
    const out = new TextDecoder();
    const err = new TextDecoder();
    let ended = 0;
    return new ReadableStream({
      start(controller) {
        controller.enqueue(sse({ type: "start", command, pid: child.pid }));
        const pause = () => {
          if (controller.desiredSize !== null && controller.desiredSize <= 0) {
            child.stdout.pause();
            child.stderr.pause();
          }
        };
        child.stdout.on("data", (b) => {
          const text = out.decode(b, { stream: true });
          if (text) controller.enqueue(sse({ type: "stdout", data: text }));
          pause();
        });
        child.stderr.on("data", (b) => {
          const text = err.decode(b, { stream: true });
          if (text) controller.enqueue(sse({ type: "stderr", data: text }));
          pause();
        });
        let code = null;
        const finish = () => {
          if (++ended < 3) return;
          controller.enqueue(sse({ type: "complete", exitCode: code ?? 1 }));
          controller.close();
        };
        child.stdout.on("end", finish);
        child.stderr.on("end", finish);
        child.on("exit", (c, signal) => {
          code = c ?? 128 + (signal === "SIGKILL" ? 9 : 15);
          finish();
        });
        child.on("error", (e) => {
          controller.enqueue(sse({ type: "error", error: e.message }));
          controller.close();
        });
      },
      pull() {
        child.stdout.resume();
        child.stderr.resume();
      },
      cancel() {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
      },
    }, { highWaterMark: 64 });
  }

  exec(command, options = {}) {
    return new Promise((resolve, reject) => {
      const child = this.spawn(command, options.env);
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (s) => (stdout += s));
      child.stderr.setEncoding("utf8").on("data", (s) => (stderr += s));
      child.on("error", reject);
      child.on("close", (code) => resolve({ success: code === 0, exitCode: code ?? 1, stdout, stderr }));
    });
  }

  async writeFile(path, content, options = {}) {
    await fs.writeFile(path, options.encoding === "base64" ? Buffer.from(content, "base64") : content);
    return { success: true, path };
  }

  async mkdir(path, options = {}) {
    await fs.mkdir(path, { recursive: !!options.recursive });
    return { success: true, path };
  }

  async destroy() {
    for (const child of this.children) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
    }
    await fs.rm(this.root, { recursive: true, force: true });
  }
}
