// A stand-in for the Pulumi engine, over gRPC as the real one: the Engine service (logs, the root
// resource) and the ResourceMonitor service, whose answers come from Pulumi's own MockMonitor fed
// by our mocks (../mocks.ts). With it, the language-host test runs the program through the SDK's
// real entry point, `@pulumi/pulumi/cmd/run`, in its own Node process, exactly as
// pulumi-language-nodejs starts it; only the engine behind the gRPC socket is a stand-in.
import * as grpc from "@grpc/grpc-js";
import * as pulumi from "@pulumi/pulumi";
import { randomBytes } from "crypto";
import * as path from "path";
import { mocksFor, Recorded } from "../mocks";

// The SDK's generated stubs and its mock monitor (internal modules of @pulumi/pulumi).
const sdk = path.dirname(require.resolve("@pulumi/pulumi/package.json"));
const { ResourceMonitorService } = require(path.join(sdk, "proto", "resource_grpc_pb"));
const resproto = require(path.join(sdk, "proto", "resource_pb"));
const { EngineService } = require(path.join(sdk, "proto", "engine_grpc_pb"));
const engproto = require(path.join(sdk, "proto", "engine_pb"));
const { Empty } = require("google-protobuf/google/protobuf/empty_pb");
const { MockMonitor } = require(path.join(sdk, "runtime", "mocks"));
const rpc = require(path.join(sdk, "runtime", "rpc"));

export interface LogEntry {
  severity: "debug" | "info" | "warning" | "error";
  message: string;
}

/** A RegisterResource request as the engine received it: the resource and the options tests check. */
export interface Registration {
  type: string;
  name: string;
  retainOnDelete: boolean;
}

export interface FakeEngine {
  /** `127.0.0.1:<port>`, for `--monitor` and `--engine`. */
  address: string;
  recorded: Recorded[];
  registrations: Registration[];
  logs: LogEntry[];
  /** The stack's outputs, as the program registered them. */
  outputs(): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

const SEVERITY = ["debug", "info", "warning", "error"] as const;

export async function startEngine(project: string, stack: string, region: string): Promise<FakeEngine> {
  // MockMonitor names URNs after this process's project and stack
  await pulumi.runtime.setMocks({ newResource: () => ({ id: "", state: {} }), call: () => ({}) }, project, stack);
  const recorded: Recorded[] = [];
  const registrations: Registration[] = [];
  const logs: LogEntry[] = [];
  // ECR gives a new token on every call, so every run of the program gets a different one
  const monitor = new MockMonitor(mocksFor(recorded, region, randomBytes(16).toString("hex")));
  let root = "";
  type Callback = (error: Error | null, response?: unknown) => void;
  const forward =
    (method: (req: unknown, callback: Callback) => void) =>
    (call: { request: unknown }, callback: Callback) =>
      method.call(monitor, call.request, callback);
  const empty = (call: unknown, callback: Callback) => callback(null, new Empty());

  const server = new grpc.Server();
  server.addService(ResourceMonitorService, {
    getDeploymentInfo: forward(monitor.getDeploymentInfo),
    supportsFeature(call: { request: any }, callback: Callback) {
      // MockMonitor answers with a plain object, which gRPC cannot serialize
      monitor.supportsFeature(call.request, (error: Error | null, answer: any) => {
        const response = new resproto.SupportsFeatureResponse();
        response.setHassupport(answer?.getHassupport() ?? false);
        callback(error, response);
      });
    },
    invoke: forward(monitor.invoke),
    readResource: forward(monitor.readResource),
    existsResource: forward(monitor.existsResource),
    registerResource(call: { request: any }, callback: Callback) {
      const request = call.request;
      registrations.push({ type: request.getType(), name: request.getName(), retainOnDelete: request.getRetainondelete() });
      monitor.registerResource(request, callback);
    },
    registerResourceOutputs(call: { request: unknown }, callback: Callback) {
      monitor.registerResourceOutputs(call.request, (error: Error | null) => callback(error, new Empty()));
    },
    registerStackTransform: empty,
    registerStackInvokeTransform: empty,
    registerPackage: forward(monitor.registerPackage),
    signalAndWaitForShutdown: empty,
  });
  server.addService(EngineService, {
    log(call: { request: any }, callback: Callback) {
      logs.push({ severity: SEVERITY[call.request.getSeverity()] ?? "info", message: call.request.getMessage() });
      callback(null, new Empty());
    },
    getRootResource(call: unknown, callback: Callback) {
      const response = new engproto.GetRootResourceResponse();
      response.setUrn(root);
      callback(null, response);
    },
    setRootResource(call: { request: any }, callback: Callback) {
      root = call.request.getUrn();
      callback(null, new engproto.SetRootResourceResponse());
    },
    requirePulumiVersion(call: unknown, callback: Callback) {
      callback(null, new engproto.RequirePulumiVersionResponse());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return {
    address: `127.0.0.1:${port}`,
    recorded,
    registrations,
    logs,
    async outputs() {
      const stack = monitor.getRegisteredResources().get(root);
      if (!stack) return {};
      // RegisterResourceOutputs stored the request's Struct
      return rpc.deserializeProperties(stack.state);
    },
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}
