// The program run the way `pulumi up -s stage` runs it, not through tsx: the SDK's own entry point
// (`@pulumi/pulumi/cmd/run`) in a Node process of its own, started with the command line,
// environment and working directory pulumi-language-nodejs gives it (sdk/nodejs/cmd/
// pulumi-language-nodejs/main.go: constructArguments, constructConfig, PULUMI_NODEJS_TYPESCRIPT),
// so that it registers its vendored ts-node with the project's tsconfig.json, type-checks and
// resolves modules as it does for users. Behind the gRPC socket, a stand-in engine answers with our
// mocks (engine.ts); the layer lookup reaches a stand-in Lambda API through AWS_ENDPOINT_URL_LAMBDA.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { LAYER_CACHE } from "../adot";
import { Recorded, stackConfig } from "../mocks";
import { ENV, FUNCTIONS, ROOMS_TABLE, ROUTES } from "../names";
import { FakeEngine, startEngine } from "./engine";
import { FakeLambda, startLambda } from "./lambda";
import { ofType, one } from "./helpers";

const PROGRAM = path.resolve(__dirname, "..");
const ROOT = path.resolve(PROGRAM, "..");
const RUN = require.resolve("@pulumi/pulumi/cmd/run", { paths: [PROGRAM] });

/** A layer zip of the test's own (its bytes are not the real layer's; its name is its hash). */
const LAYER = Buffer.from(`webchat language-host test layer ${process.pid}\n`);
const LAYER_SHA256 = createHash("sha256").update(LAYER).digest("hex");

/** Pulumi.stage.yaml's config, plus `extra`, in PULUMI_CONFIG's `<namespace>:config:<name>` form. */
function pulumiConfig(extra: Record<string, string>): string {
  const config: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...stackConfig("stage"), ...extra })) {
    const [namespace, name] = key.split(":");
    config[`${namespace}:config:${name}`] = value;
  }
  return JSON.stringify(config);
}

interface Run {
  code: number | null;
  output: string;
  engine: FakeEngine;
  recorded: Recorded[];
}

/** Runs the program once under a fresh engine, as the language host does. */
async function runProgram(lambda: FakeLambda, extraConfig: Record<string, string> = {}, env: Record<string, string> = {}): Promise<Run> {
  const engine = await startEngine("webchat", "stage", "eu-west-1");
  const args = [
    RUN,
    "--monitor", engine.address,
    "--engine", engine.address,
    "--organization", "organization",
    "--project", "webchat",
    "--root-directory", ROOT,
    "--stack", "stage",
    "--pwd", PROGRAM,
    "--parallel", "16",
    ".",
  ];
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    PULUMI_CONFIG: pulumiConfig(extraConfig),
    PULUMI_CONFIG_SECRET_KEYS: "[]",
    PULUMI_NODEJS_TYPESCRIPT: "true",
    AWS_ENDPOINT_URL_LAMBDA: lambda.endpoint,
    AWS_ACCESS_KEY_ID: "AKIDFROMENVIRONMENT",
    AWS_SECRET_ACCESS_KEY: "secret-from-environment",
    AWS_CONFIG_FILE: path.join(os.tmpdir(), "webchat-no-aws-config"),
    AWS_SHARED_CREDENTIALS_FILE: path.join(os.tmpdir(), "webchat-no-aws-credentials"),
    ...env,
  };
  delete childEnv.NODE_TEST_CONTEXT; // the program is not a test file
  delete childEnv.NODE_OPTIONS;
  const child = spawn(process.execPath, args, { cwd: ROOT, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  await engine.close();
  return { code, output, engine, recorded: engine.recorded };
}

function errors(run: Run): string {
  return run.engine.logs.filter((l) => l.severity === "error").map((l) => l.message).join("\n");
}

function imageInputs(run: Run): Record<string, Record<string, any>> {
  return Object.fromEntries(ofType(run.recorded, "docker-build:index:Image").map(({ name, inputs }) => [name, inputs]));
}

/** The paths at which two JSON values differ, like `registries.0.password`. */
function differences(a: any, b: any, at = ""): string[] {
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return a === b ? [] : [at];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((key) => differences(a[key], b[key], at ? `${at}.${key}` : key));
}

/** The image URI forms Lambda accepts: an ECR repository with either a tag or a digest, not both. */
const LAMBDA_IMAGE_URI = /^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/[a-z0-9]+(?:[._/-][a-z0-9]+)*(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$/;

describe("the program under Pulumi's language host", () => {
  let lambda: FakeLambda;
  let first: Run;
  let second: Run;

  before(async () => {
    fs.rmSync(path.join(LAYER_CACHE, `${LAYER_SHA256}.zip`), { force: true });
    lambda = await startLambda(LAYER, { regionsWithout: ["il-central-1"] });
    first = await runProgram(lambda);
    second = await runProgram(lambda);
  });

  after(async () => {
    await lambda?.close();
    fs.rmSync(path.join(LAYER_CACHE, `${LAYER_SHA256}.zip`), { force: true });
  });

  it("runs to the end and registers every resource", () => {
    assert.equal(first.code, 0, `${first.output}\n${errors(first)}`);
    assert.equal(errors(first), "");
    assert.equal(ofType(first.recorded, "aws:lambda/function:Function").length, FUNCTIONS.length);
    assert.equal(ofType(first.recorded, "docker-build:index:Image").length, FUNCTIONS.length);
    assert.equal(ofType(first.recorded, "aws:apigatewayv2/route:Route").length, Object.keys(ROUTES).length);
    assert.deepEqual(ofType(first.recorded, "aws:dynamodb/table:Table").map((t) => t.name).sort(), ["connections", "rooms"]);
    for (const type of [
      "aws:apigatewayv2/stage:Stage",
      "aws:cloudwatch/eventTarget:EventTarget",
      "aws:scheduler/schedule:Schedule",
      "aws:ecr/repository:Repository",
      "aws:lambda/eventSourceMapping:EventSourceMapping",
    ]) {
      assert.equal(ofType(first.recorded, type).length, 1, type);
    }
    // three dashboards, each within the free tier's 50 metrics (test/dashboard.test.ts counts them)
    const dashboards = ofType(first.recorded, "aws:cloudwatch/dashboard:Dashboard").map((d) => d.inputs.dashboardName).sort();
    assert.deepEqual(dashboards, ["webchat-stage", "webchat-stage-functions", "webchat-stage-limits"]);
    // the alarms: refusals sustained and the fan-out ceiling, no composite
    assert.equal(ofType(first.recorded, "aws:cloudwatch/metricAlarm:MetricAlarm").length, 2);
    assert.equal(ofType(first.recorded, "aws:cloudwatch/compositeAlarm:CompositeAlarm").length, 0);
  });

  it("deploys the rooms: their table, their routes, and every chat function told the table and Pulumi.stage.yaml's rooms settings", async () => {
    const rooms = ofType(first.recorded, "aws:dynamodb/table:Table").find((t) => t.name === "rooms");
    assert.ok(rooms);
    assert.deepEqual([rooms.inputs.hashKey, rooms.inputs.rangeKey], [ROOMS_TABLE.partitionKey, ROOMS_TABLE.sortKey]);
    assert.deepEqual(rooms.inputs.ttl, { attributeName: ROOMS_TABLE.ttlAttribute, enabled: true });
    const stage = stackConfig("stage");
    for (const fn of ofType(first.recorded, "aws:lambda/function:Function")) {
      const variables = fn.inputs.environment.variables;
      assert.equal(variables[ENV.roomsTable], rooms.id, fn.inputs.name);
      assert.equal(variables[ENV.historyDays], stage["webchat:historyDays"] ?? "7", fn.inputs.name);
      assert.equal(variables[ENV.presenceLimit], stage["webchat:presenceLimit"] ?? "100", fn.inputs.name);
    }
    const routes = ofType(first.recorded, "aws:apigatewayv2/route:Route").map((r) => r.inputs.routeKey);
    for (const route of ["join", "leave", "history"]) assert.ok(routes.includes(route), route);
    assert.equal((await first.engine.outputs()).roomsTableName, rooms.id);
  });

  it("tells every chat function Pulumi.stage.yaml's limits", () => {
    const stage = stackConfig("stage");
    const settings: [string, string, string][] = [
      ["frameRate", ENV.frameRate, "10"],
      ["frameBurst", ENV.frameBurst, "20"],
      ["userFrameRate", ENV.userFrameRate, "20"],
      ["deliveryBudget", ENV.deliveryBudget, "10000"],
      ["connectionsPerUser", ENV.connectionsPerUser, "10"],
      ["everyoneBroadcast", ENV.everyoneBroadcast, "true"],
    ];
    for (const fn of ofType(first.recorded, "aws:lambda/function:Function")) {
      const variables = fn.inputs.environment.variables;
      for (const [key, name, fallback] of settings) {
        assert.equal(variables[name], stage[`webchat:${key}`] ?? fallback, `${fn.inputs.name}: ${name}`);
      }
    }
  });

  it("exports the wss:// URL of the stage", async () => {
    const outputs = await first.engine.outputs();
    assert.match(String(outputs.url), /^wss:\/\/[a-z0-9]{10}\.execute-api\.eu-west-1\.amazonaws\.com\/stage$/);
    assert.match(String(outputs.managementEndpoint), /^https:\/\/[a-z0-9]{10}\.execute-api\.eu-west-1\.amazonaws\.com\/stage$/);
  });

  it("exports the shard queue's and its dead-letter queue's URLs, the three dashboards and the two alarms", async () => {
    const outputs = await first.engine.outputs();
    const queues = ofType(first.recorded, "aws:sqs/queue:Queue");
    const urlOf = (name: string) => `https://sqs.eu-west-1.amazonaws.com/123456789012/${queues.find((q) => q.name === name)?.id}`;
    assert.equal(outputs.shardQueueUrl, urlOf("shards"));
    assert.equal(outputs.shardDeadLetterQueueUrl, urlOf("shards-dead-letters"));
    assert.equal(outputs.dashboardName, "webchat-stage");
    assert.equal(outputs.dashboardUrl, "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#dashboards/dashboard/webchat-stage");
    assert.equal(outputs.functionsDashboardName, "webchat-stage-functions");
    assert.equal(outputs.functionsDashboardUrl, "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#dashboards/dashboard/webchat-stage-functions");
    assert.equal(outputs.limitsDashboardName, "webchat-stage-limits");
    assert.equal(outputs.limitsDashboardUrl, "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#dashboards/dashboard/webchat-stage-limits");
    assert.equal(outputs.refusalsAlarmName, "webchat-stage-refusals");
    assert.equal(outputs.fanoutCeilingAlarmName, "webchat-stage-fanout-ceiling");
  });

  it("gives every function an image URI Lambda accepts: the repository and the digest, no tag", () => {
    for (const fn of ofType(first.recorded, "aws:lambda/function:Function")) {
      assert.match(fn.inputs.imageUri, LAMBDA_IMAGE_URI, fn.inputs.name);
      assert.match(fn.inputs.imageUri, /@sha256:[0-9a-f]{64}$/, fn.inputs.name);
    }
  });

  it("builds the images from the layer's zip, named by the CodeSha256 Lambda gave, downloaded once", () => {
    for (const image of ofType(first.recorded, "docker-build:index:Image")) {
      assert.equal(image.inputs.buildArgs.ADOT_LAYER_SHA256, LAYER_SHA256);
    }
    assert.equal(fs.readFileSync(path.join(LAYER_CACHE, `${LAYER_SHA256}.zip`)).toString(), LAYER.toString());
    assert.equal(lambda.calls.length, 2, "one lookup per evaluation");
    assert.equal(new Set(lambda.locations).size, 2, "every lookup handed out a new URL");
    assert.equal(lambda.downloads, 1, "the second evaluation found the zip on disk");
  });

  it("gives identical image inputs on a second evaluation with nothing changed but the ECR token", () => {
    assert.equal(second.code, 0, `${second.output}\n${errors(second)}`);
    // each run gets a fresh token; docker-build's Diff ignores the password, and nothing else may differ
    const [before, after] = [imageInputs(first), imageInputs(second)];
    assert.deepEqual(Object.keys(after).sort(), Object.keys(before).sort());
    for (const name of Object.keys(before)) {
      assert.deepEqual(differences(before[name], after[name]), ["registries.0.password"], name);
    }
    const uris = (run: Run) => ofType(run.recorded, "aws:lambda/function:Function").map((f) => f.inputs.imageUri).sort();
    assert.deepEqual(uris(second), uris(first));
  });

  it("lets `pulumi destroy` work at any age: images retained on delete, the repository force-deleted", () => {
    // destroy never calls docker-build's Delete (with the expired token in state); deleting the
    // repository, which is not retained, removes the images
    const images = ofType(first.engine.registrations, "docker-build:index:Image");
    assert.equal(images.length, FUNCTIONS.length);
    for (const image of images) assert.equal(image.retainOnDelete, true, image.name);
    assert.equal(one(first.engine.registrations, "aws:ecr/repository:Repository").retainOnDelete, false);
    assert.equal(one(first.recorded, "aws:ecr/repository:Repository").inputs.forceDelete, true);
  });

  it("exports the sign-in outputs as null by default", async () => {
    const outputs = await first.engine.outputs();
    // present, as null: `pulumi stack output` lists them either way
    for (const name of ["jwtIssuer", "jwtAudience", "getToken"]) {
      assert.ok(name in outputs, name);
      assert.equal(outputs[name], null, name);
    }
  });

  it("runs with sign-in by the stack's Cognito pool: the pool, its client and the authorizer, and the sign-in outputs", async () => {
    const run = await runProgram(lambda, { "webchat:cognito": "true" });
    assert.equal(run.code, 0, `${run.output}\n${errors(run)}`);
    assert.equal(errors(run), "");
    const pool = one(run.recorded, "aws:cognito/userPool:UserPool");
    const client = one(run.recorded, "aws:cognito/userPoolClient:UserPoolClient");
    const authorizer = one(run.recorded, "aws:apigatewayv2/authorizer:Authorizer");
    assert.equal(ofType(run.recorded, "aws:lambda/function:Function").length, FUNCTIONS.length + 1);
    assert.equal(ofType(run.recorded, "docker-build:index:Image").length, FUNCTIONS.length + 1);
    const connect = ofType(run.recorded, "aws:apigatewayv2/route:Route").find((r) => r.inputs.routeKey === "$connect");
    assert.equal(connect?.inputs.authorizerId, authorizer.id);
    const outputs = await run.engine.outputs();
    assert.equal(outputs.jwtIssuer, `https://cognito-idp.eu-west-1.amazonaws.com/${pool.id}`);
    assert.equal(outputs.jwtAudience, client.id);
    assert.match(String(outputs.getToken), new RegExp(`initiate-auth --region eu-west-1 --client-id ${client.id} `));
  });

  it("stops before creating anything when the stage sets IAM auth and sign-in, naming both settings", async () => {
    const run = await runProgram(lambda, { "webchat:iamAuth": "true", "webchat:cognito": "true" });
    assert.notEqual(run.code, 0);
    assert.match(`${errors(run)}\n${run.output}`, /webchat:iamAuth and sign-in \(webchat:cognito\) exclude each other/);
    assert.deepEqual(run.recorded.filter((r) => !r.type.startsWith("pulumi:")), []);
  });

  it("stops before creating anything when webchat:historyDays is out of its bounds, naming the setting", async () => {
    const run = await runProgram(lambda, { "webchat:historyDays": "400" });
    assert.notEqual(run.code, 0);
    assert.match(`${errors(run)}\n${run.output}`, /webchat:historyDays must be a whole number from 1 to 365 \(days a room's messages are kept\), not 400/);
    assert.deepEqual(run.recorded.filter((r) => !r.type.startsWith("pulumi:")), []);
  });

  it("stops before creating anything when a limit is out of its bounds or webchat:everyoneBroadcast is not a boolean, naming the setting", async () => {
    const run = await runProgram(lambda, { "webchat:frameRate": "1001" });
    assert.notEqual(run.code, 0);
    assert.match(`${errors(run)}\n${run.output}`, /webchat:frameRate must be a whole number from 0 to 1000 \(frames a second per connection; 0 for no limit\), not 1001/);
    assert.deepEqual(run.recorded.filter((r) => !r.type.startsWith("pulumi:")), []);
    const notBoolean = await runProgram(lambda, { "webchat:everyoneBroadcast": "no" });
    assert.notEqual(notBoolean.code, 0);
    assert.match(`${errors(notBoolean)}\n${notBoolean.output}`, /webchat:everyoneBroadcast must be true or false \(whether a broadcast may address everyone\), not no/);
    assert.deepEqual(notBoolean.recorded.filter((r) => !r.type.startsWith("pulumi:")), []);
  });

  it("looks the layer up in the layer's region with the stack's AWS profile", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "webchat-aws-"));
    const credentials = path.join(dir, "credentials");
    fs.writeFileSync(credentials, "[deployer]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = secret-from-profile\n");
    const before = lambda.calls.length;
    const run = await runProgram(
      lambda,
      { "aws:profile": "deployer", "webchat:adotLayerArn": "arn:aws:lambda:us-east-1:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1" },
      { AWS_SHARED_CREDENTIALS_FILE: credentials },
    );
    fs.rmSync(dir, { recursive: true });
    assert.equal(run.code, 0, `${run.output}\n${errors(run)}`);
    assert.deepEqual(lambda.calls.slice(before), [
      { arn: "arn:aws:lambda:us-east-1:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1", accessKeyId: "AKIDFROMPROFILE", region: "us-east-1" },
    ]);
  });

  it("fails with a message naming webchat:adotLayerArn in a region without the layer", async () => {
    // (after an unhandled error, the SDK's gRPC channel keeps the process alive ~40 s before exit)
    const run = await runProgram(lambda, { "aws:region": "il-central-1" });
    assert.notEqual(run.code, 0);
    const reported = `${errors(run)}\n${run.output}`;
    assert.match(reported, /webchat:adotLayerArn/);
    assert.match(reported, /not available in il-central-1/);
    assert.match(reported, /arn:aws:lambda:us-east-1:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1/);
  });
});
