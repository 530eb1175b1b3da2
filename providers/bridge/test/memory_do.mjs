// Durable Objects without Cloudflare, for the Node harness: a namespace that makes one object per name, each
// with a storage that keeps values as the platform does (structured clones, sorted listing, one alarm).
// With `file`, every namespace's storage is also written to that JSON file after each change and read back
// at start: the harness's leases survive a restart, as Durable Object storage does.
import fs from "node:fs";

export class MemoryStorage {
  constructor(onChange) {
    this.data = new Map();
    this.alarmAt = null;
    this.alarmTimer = undefined;
    this.onAlarm = undefined;
    this.onChange = onChange ?? (() => {});
  }

  async get(key) {
    const v = this.data.get(key);
    return v === undefined ? undefined : structuredClone(v);
  }

  async put(key, value) {
    this.data.set(key, structuredClone(value));
    this.onChange();
  }

  async delete(key) {
    const had = this.data.delete(key);
    this.onChange();
    return had;
  }

  async list(options = {}) {
    const prefix = options.prefix ?? "";
    const keys = [...this.data.keys()].filter((k) => k.startsWith(prefix)).sort();
    return new Map(keys.map((k) => [k, structuredClone(this.data.get(k))]));
  }

  async getAlarm() {
    return this.alarmAt;
  }

  async setAlarm(when) {
    clearTimeout(this.alarmTimer);
    this.alarmAt = when;
    this.alarmTimer = setTimeout(() => {
      this.alarmAt = null;
      Promise.resolve(this.onAlarm?.()).catch((e) => console.error("alarm:", e));
    }, Math.max(0, when - Date.now()));
    this.alarmTimer.unref();
  }
}

export class MemoryNamespace {
  /** make(state, name) builds the object of a name. */
  constructor(kind, make, file) {
    this.kind = kind;
    this.make = make;
    this.file = file;
    this.objects = new Map();
    this.saved = file && fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : {};
  }

  idFromName(name) {
    return name;
  }

  get(name) {
    let obj = this.objects.get(name);
    if (!obj) {
      const storage = new MemoryStorage(() => this.persist());
      for (const [k, v] of Object.entries(this.saved[name] ?? {})) storage.data.set(k, v);
      const state = { storage, blockConcurrencyWhile: (fn) => fn() };
      const instance = this.make(state, name);
      storage.onAlarm = () => instance.alarm?.();
      obj = { instance, storage };
      this.objects.set(name, obj);
    }
    return { fetch: (input, init) => obj.instance.fetch(new Request(input, init)) };
  }

  persist() {
    if (!this.file) return;
    const all = { ...this.saved };
    for (const [name, { storage }] of this.objects) all[name] = Object.fromEntries(storage.data);
    fs.writeFileSync(this.file + ".tmp", JSON.stringify(all));
    fs.renameSync(this.file + ".tmp", this.file);
  }
}
