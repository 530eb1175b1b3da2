// The Worker's entry, the only file that imports the Cloudflare Sandbox SDK (it imports `cloudflare:workers`,
// which Node cannot load): it binds the route code (worker.ts) and the Durable Objects (lease.ts,
// coordinator.ts) to the real platform. Deploy with `wrangler deploy` (README.md beside this directory).
import { getSandbox, Sandbox } from "@cloudflare/sandbox";
import { FerryCoordinatorObject } from "./coordinator.js";
import { FerryLeaseObject } from "./lease.js";
import type { Env, SandboxFor, StateLike } from "./types.js";
import { handle } from "./worker.js";

export { Sandbox };

export interface WorkerEnv extends Env {
  Sandbox: DurableObjectNamespace<Sandbox>;
}

// One container per lease, kept until the lease ends (keepAlive: a sleeping container loses its disk, and a
// prepared workspace must outlive the prepare); each command a fresh process, not the default shell session.
const sandboxFor: SandboxFor = (env, leaseId) =>
  getSandbox((env as WorkerEnv).Sandbox, leaseId, { keepAlive: true, enableDefaultSession: false });

export class FerryLease extends FerryLeaseObject {
  constructor(state: DurableObjectState, env: WorkerEnv) {
    super(state as unknown as StateLike, env, { sandboxFor });
  }
}

export class FerryCoordinator extends FerryCoordinatorObject {
  constructor(state: DurableObjectState, env: WorkerEnv) {
    super(state as unknown as StateLike, env);
  }
}

export default {
  fetch(request: Request, env: WorkerEnv): Promise<Response> {
    return handle(request, env);
  },
} satisfies ExportedHandler<WorkerEnv>;
