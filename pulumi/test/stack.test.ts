// The stack's wiring, checked offline with Pulumi's mocks.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { before, describe, it } from "node:test";
import { permissionsOf, SHARDING } from "../components/functions";
import { ACCOUNT, Recorded } from "../mocks";
import { AUTHORIZER, ENV, FUNCTIONS, MESSAGE_FUNCTIONS, ROUTES, TABLE, WELCOME } from "../names";
import { one, ofType, synthesizeStack } from "./helpers";

let recorded: Recorded[];
let outputs: Record<string, unknown>;
before(async () => {
  ({ recorded, outputs } = await synthesizeStack({ "webchat:cleanupSchedule": "rate(7 minutes)", "webchat:memory": "1024" }));
});

/** The id the (mock) provider gave the API. */
function apiIdOf(recorded: Recorded[]): string {
  const stage = one(recorded, "aws:apigatewayv2/stage:Stage");
  return stage.inputs.apiId;
}

function shardQueue(): Recorded {
  const found = ofType(recorded, "aws:sqs/queue:Queue").find((q) => q.name === "shards");
  assert.ok(found, "the shard queue");
  return found;
}

/** The connections table or the rooms table, by the program's name for it. */
function tableNamed(name: "connections" | "rooms"): Recorded {
  const found = ofType(recorded, "aws:dynamodb/table:Table").find((t) => t.name === name);
  assert.ok(found, `the ${name} table`);
  return found;
}

function functionNamed(fn: string): Recorded {
  const found = ofType(recorded, "aws:lambda/function:Function").find((f) => f.inputs.name === `webchat-stage-${fn}`);
  assert.ok(found, `function ${fn}`);
  return found;
}

describe("the webchat stack", () => {
  it("routes every route key to its own function through a proxy integration", () => {
    const routes = ofType(recorded, "aws:apigatewayv2/route:Route");
    assert.deepEqual(routes.map((r) => r.inputs.routeKey).sort(), Object.keys(ROUTES).sort());
    for (const route of routes) {
      const integrationId = String(route.inputs.target).replace(/^integrations\//, "");
      const integration = ofType(recorded, "aws:apigatewayv2/integration:Integration").find((i) => i.id === integrationId);
      assert.ok(integration, `integration of ${route.inputs.routeKey}`);
      assert.equal(integration.inputs.integrationType, "AWS_PROXY");
      assert.match(integration.inputs.integrationUri, new RegExp(`function:webchat-stage-${ROUTES[route.inputs.routeKey]}/invocations$`));
    }
  });

  it("lets API Gateway invoke each function only for its own route", () => {
    const permissions = ofType(recorded, "aws:lambda/permission:Permission").filter((p) => p.inputs.principal === "apigateway.amazonaws.com");
    assert.equal(permissions.length, Object.keys(ROUTES).length);
    for (const [routeKey, fn] of Object.entries(ROUTES)) {
      const permission = permissions.find((p) => p.inputs.function === `webchat-stage-${fn}`);
      assert.ok(permission, fn);
      assert.equal(permission.inputs.sourceArn, `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiIdOf(recorded)}/*/${routeKey}`);
    }
  });

  it("selects routes by action and deploys every change by itself, throttled", () => {
    const api = one(recorded, "aws:apigatewayv2/api:Api");
    assert.equal(api.inputs.protocolType, "WEBSOCKET");
    assert.equal(api.inputs.routeSelectionExpression, "$request.body.action");
    const stage = one(recorded, "aws:apigatewayv2/stage:Stage");
    assert.equal(stage.inputs.autoDeploy, true);
    assert.equal(stage.inputs.name, "stage");
    assert.equal(stage.inputs.defaultRouteSettings.throttlingRateLimit, 500);
    assert.equal(stage.inputs.defaultRouteSettings.throttlingBurstLimit, 1000);
  });

  it("deploys on an account without API Gateway's CloudWatch role: no access logs, no account setting, by default", () => {
    const stage = one(recorded, "aws:apigatewayv2/stage:Stage");
    assert.equal(stage.inputs.accessLogSettings, undefined);
    assert.deepEqual(ofType(recorded, "aws:apigateway/account:Account"), []);
  });

  it("connects without IAM auth unless the stage asks for it", () => {
    const connect = ofType(recorded, "aws:apigatewayv2/route:Route").find((r) => r.inputs.routeKey === "$connect");
    assert.equal(connect?.inputs.authorizationType, "NONE");
  });

  it("connects without sign-in unless the stage asks for it: no authorizer, no user pool, no sign-in outputs", () => {
    for (const route of ofType(recorded, "aws:apigatewayv2/route:Route")) {
      assert.equal(route.inputs.authorizerId, undefined, route.inputs.routeKey);
    }
    for (const type of ["aws:apigatewayv2/authorizer:Authorizer", "aws:cognito/userPool:UserPool", "aws:cognito/userPoolClient:UserPoolClient"]) {
      assert.deepEqual(ofType(recorded, type), [], type);
    }
    const functions = ofType(recorded, "aws:lambda/function:Function");
    assert.equal(functions.length, FUNCTIONS.length);
    assert.ok(!functions.some((f) => f.inputs.name === `webchat-stage-${AUTHORIZER.function}`));
    assert.equal(ofType(recorded, "docker-build:index:Image").length, FUNCTIONS.length);
    assert.deepEqual([outputs.jwtIssuer, outputs.jwtAudience, outputs.getToken], [null, null, null]);
  });

  it("lets only the message routes' functions close a connection (DELETE @connections), which the limits need without sign-in too", () => {
    for (const policy of ofType(recorded, "aws:iam/rolePolicy:RolePolicy")) {
      const fn = policy.name.replace(/^webchat-/, "");
      assert.equal(/\/DELETE\/@connections\/\*/.test(policy.inputs.policy), MESSAGE_FUNCTIONS.includes(fn), policy.name);
    }
  });

  it("gives every function exactly the permissions its code uses, scoped to its resources", () => {
    const policies = ofType(recorded, "aws:iam/rolePolicy:RolePolicy").filter((p) => p.name.startsWith("webchat-"));
    assert.equal(policies.length, FUNCTIONS.length);
    const table = tableNamed("connections");
    const roomsTableArn = `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/${tableNamed("rooms").id}`;
    const apiId = apiIdOf(recorded);
    for (const fn of FUNCTIONS) {
      const policy = policies.find((p) => p.name === `webchat-${fn}`);
      assert.ok(policy, fn);
      const statements: any[] = JSON.parse(policy.inputs.policy).Statement;
      for (const statement of statements) {
        const resources = [statement.Resource].flat();
        if (resources.includes("*")) {
          assert.deepEqual(statement.Action, ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], `${fn}: * only where AWS requires it`);
        }
      }
      const actions = (prefix: string) => statements.flatMap((s) => [s.Action].flat()).filter((a: string) => a.startsWith(prefix));
      // DynamoDB: the connections table's actions on it, the index's on the index, the rooms
      // table's on the rooms table, nothing else
      const tableArn = `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/${table.id}`;
      const permissions = permissionsOf(fn, false);
      // what a function may do to a whole table; the limits' buckets are a Condition's, below
      const on = (resource: string) => statements.filter((s) => s.Resource === resource && !s.Condition).flatMap((s) => [s.Action].flat());
      assert.deepEqual(on(tableArn).sort(), [...permissions.dynamodb].sort(), fn);
      assert.deepEqual(on(`${tableArn}/index/${TABLE.userIndex.name}`).sort(), [...permissions.userIndex].sort(), fn);
      assert.deepEqual(on(roomsTableArn).sort(), [...permissions.rooms].sort(), fn);
      const buckets = statements.filter((s) => s.Condition);
      assert.equal(buckets.length, permissions.limitBuckets && !permissions.rooms.includes("dynamodb:UpdateItem") ? 1 : 0, fn);
      for (const statement of buckets) assert.equal(statement.Resource, roomsTableArn, fn);
      assert.equal(
        actions("dynamodb:").length,
        permissions.dynamodb.length + permissions.userIndex.length + permissions.rooms.length + buckets.length,
        fn,
      );
      assert.equal(actions("events:").length > 0, permissions.putEvents, fn);
      assert.deepEqual(actions("sqs:").sort(), [...permissions.sqs].sort(), fn);
      const sqs = statements.find((s) => [s.Action].flat().some((a: string) => a.startsWith("sqs:")));
      if (sqs) assert.equal(sqs.Resource, `arn:aws:sqs:eu-west-1:${ACCOUNT}:${shardQueue().id}`, `${fn}: the shard queue only`);
      assert.match(tableArn, new RegExp(`^arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/connections-[0-9a-f]{7}$`));
      const manage = statements.find((s) => [s.Action].flat().includes("execute-api:ManageConnections"));
      const methods = permissions.connections;
      if (methods.length === 0) {
        assert.equal(manage, undefined, `${fn} never calls @connections`);
      } else {
        assert.deepEqual(
          [manage!.Resource].flat(),
          methods.map((m) => `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId}/stage/${m}/@connections/*`),
        );
      }
      const logs = statements.find((s) => [s.Action].flat().includes("logs:PutLogEvents"));
      assert.match(logs.Resource, new RegExp(`log-group:/aws/lambda/webchat-stage-${fn}:\\*$`));
    }
  });

  it("keeps connections in an on-demand table with TTL on expiresAt and point-in-time recovery", () => {
    const table = tableNamed("connections");
    assert.equal(table.inputs.billingMode, "PAY_PER_REQUEST");
    assert.equal(table.inputs.hashKey, TABLE.key);
    assert.deepEqual(table.inputs.ttl, { attributeName: TABLE.ttlAttribute, enabled: true });
    assert.equal(table.inputs.pointInTimeRecovery.enabled, true);
  });

  it("indexes connections by user: byUser on userId, projecting connectedAt and expiresAt, and without sign-in only chat queries it", () => {
    const table = tableNamed("connections");
    assert.deepEqual(table.inputs.attributes, [
      { name: "connectionId", type: "S" },
      { name: "userId", type: "S" },
    ]);
    // exactly this: no capacity, which an index of an on-demand table does not take
    assert.deepEqual(table.inputs.globalSecondaryIndexes, [
      {
        name: "byUser",
        keySchemas: [{ attributeName: "userId", keyType: "HASH" }],
        projectionType: "INCLUDE",
        nonKeyAttributes: ["connectedAt", "expiresAt"],
      },
    ]);
    const index = `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/${table.id}/index/byUser`;
    const querying = ofType(recorded, "aws:iam/rolePolicy:RolePolicy").filter((p) =>
      JSON.parse(p.inputs.policy).Statement.some((s: any) => s.Resource === index),
    );
    assert.deepEqual(querying.map((p) => p.name), ["webchat-chat"]);
    const [statement] = JSON.parse(querying[0].inputs.policy).Statement.filter((s: any) => s.Resource === index);
    assert.deepEqual(statement.Action, ["dynamodb:Query"]);
  });

  it("builds one image per function from the Dockerfile and runs each function from its image, by digest", () => {
    const images = ofType(recorded, "docker-build:index:Image");
    assert.deepEqual(images.map((i) => i.inputs.buildArgs.HANDLER).sort(), [...FUNCTIONS].sort());
    for (const image of images) {
      assert.deepEqual(image.inputs.platforms, ["linux/arm64"]);
      assert.equal(image.inputs.push, true);
      assert.equal(image.inputs.buildOnPreview, false, "a preview does not compile");
      assert.match(image.inputs.dockerfile.location, /\/Dockerfile$/);
      assert.match(image.inputs.buildArgs.ADOT_LAYER_SHA256, /^[0-9a-f]{64}$/);
      assert.deepEqual(Object.keys(image.inputs.buildArgs).sort(), ["ADOT_LAYER_SHA256", "HANDLER"]);
    }
    const repository = one(recorded, "aws:ecr/repository:Repository");
    assert.equal(repository.inputs.imageScanningConfiguration.scanOnPush, true);
    one(recorded, "aws:ecr/lifecyclePolicy:LifecyclePolicy");
    for (const fn of FUNCTIONS) {
      const lambda = functionNamed(fn);
      assert.equal(lambda.inputs.packageType, "Image");
      assert.match(lambda.inputs.imageUri, new RegExp(`^${ACCOUNT}\\.dkr\\.ecr\\.eu-west-1\\.amazonaws\\.com/webchat-[0-9a-f]{7}@sha256:[0-9a-f]{64}$`));
    }
  });

  it("configures every function from the stack: tracing, JSON logs, memory, environment", () => {
    for (const fn of FUNCTIONS) {
      const lambda = functionNamed(fn);
      assert.equal(lambda.inputs.tracingConfig.mode, "Active");
      assert.equal(lambda.inputs.loggingConfig.logFormat, "JSON");
      assert.equal(lambda.inputs.loggingConfig.applicationLogLevel, "INFO");
      // Lambda's START/END/REPORT lines (duration, init duration, memory) are system logs at INFO
      assert.equal(lambda.inputs.loggingConfig.systemLogLevel, "INFO");
      assert.equal(lambda.inputs.memorySize, 1024);
      assert.deepEqual(lambda.inputs.architectures, ["arm64"]);
      const variables = lambda.inputs.environment.variables;
      assert.equal(variables[ENV.managementEndpoint], `https://${apiIdOf(recorded)}.execute-api.eu-west-1.amazonaws.com/stage`);
      assert.ok(variables[ENV.table] && variables[ENV.eventBus] && variables[ENV.logLevel]);
      assert.equal(variables[ENV.metricsNamespace], "webchat/stage");
      // the rooms: the table's name, and the defaults of webchat:historyDays and presenceLimit
      assert.equal(variables[ENV.table], tableNamed("connections").id, fn);
      assert.equal(variables[ENV.roomsTable], tableNamed("rooms").id, fn);
      assert.equal(variables[ENV.historyDays], "7", fn);
      assert.equal(variables[ENV.presenceLimit], "100", fn);
      // the limits: their defaults
      assert.deepEqual(
        [ENV.frameRate, ENV.frameBurst, ENV.userFrameRate, ENV.deliveryBudget, ENV.connectionsPerUser, ENV.everyoneBroadcast].map((name) => variables[name]),
        ["10", "20", "20", "10000", "10", "true"],
        fn,
      );
      // the defaults: 8,000 posts/s over 8 workers, 1,000-item pages
      assert.equal(variables[ENV.postRate], SHARDING.includes(fn) ? "1000" : undefined, fn);
      assert.equal(variables[ENV.scanPageSize], SHARDING.includes(fn) ? "1000" : undefined, fn);
      assert.equal(variables[ENV.shardQueue] !== undefined, SHARDING.includes(fn), fn);
    }
    const groups = ofType(recorded, "aws:cloudwatch/logGroup:LogGroup");
    assert.ok(groups.every((g) => g.inputs.retentionInDays === 14));
  });

  it("sends welcome events to post, with a dead-letter queue", () => {
    const rule = one(recorded, "aws:cloudwatch/eventRule:EventRule");
    assert.deepEqual(JSON.parse(rule.inputs.eventPattern), { source: [WELCOME.source], "detail-type": [WELCOME.detailType] });
    const target = one(recorded, "aws:cloudwatch/eventTarget:EventTarget");
    assert.match(target.inputs.arn, /function:webchat-stage-post$/);
    assert.ok(target.inputs.deadLetterConfig.arn);
    const permission = ofType(recorded, "aws:lambda/permission:Permission").find((p) => p.inputs.principal === "events.amazonaws.com");
    assert.equal(permission?.inputs.function, "webchat-stage-post");
  });

  it("runs cleanup on the stage's schedule, with a role only this account's scheduler can assume", () => {
    const schedule = one(recorded, "aws:scheduler/schedule:Schedule");
    assert.equal(schedule.inputs.scheduleExpression, "rate(7 minutes)");
    assert.match(schedule.inputs.target.arn, /function:webchat-stage-cleanup$/);
    const role = ofType(recorded, "aws:iam/role:Role").find((r) => r.name === "cleanup");
    const [statement] = JSON.parse(role!.inputs.assumeRolePolicy).Statement;
    assert.deepEqual(statement.Principal, { Service: "scheduler.amazonaws.com" });
    assert.equal(statement.Condition.StringEquals["aws:SourceAccount"], ACCOUNT);
    assert.equal(statement.Condition.StringEquals["aws:SourceArn"], `arn:aws:scheduler:eu-west-1:${ACCOUNT}:schedule-group/default`);
  });

  it("has no JSON file that Pulumi's loader would take for a module of the same name", () => {
    // Node (and ts-node after it) resolves `./x` as x.js, then x.json, and only then x.ts.
    const program = path.resolve(__dirname, "..");
    for (const dir of [program, path.join(program, "components"), path.join(program, "test")]) {
      for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
        const json = path.join(dir, file.replace(/\.ts$/, ".json"));
        assert.ok(!fs.existsSync(json), `${json} shadows ${file}`);
      }
    }
  });
});
