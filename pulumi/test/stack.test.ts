// The stack's wiring, checked offline with Pulumi's mocks.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { FUNCTIONS, PERMISSIONS, ROUTES, TABLE, WELCOME, ENV } from "../contract";
import { Recorded } from "../mocks";
import { one, ofType, synthesize } from "./helpers";

let recorded: Recorded[];
before(async () => {
  recorded = await synthesize({ "webchat:cleanupSchedule": "rate(7 minutes)", "webchat:memory": "1024" });
});

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
      const integrationName = String(route.inputs.target).replace(/^integrations\//, "").replace(/-id$/, "");
      const integration = ofType(recorded, "aws:apigatewayv2/integration:Integration").find((i) => i.name === integrationName);
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
      assert.ok(String(permission.inputs.sourceArn).endsWith(`/*/${routeKey}`), permission.inputs.sourceArn);
    }
  });

  it("selects routes by action and deploys every change by itself, throttled and access-logged", () => {
    const api = one(recorded, "aws:apigatewayv2/api:Api");
    assert.equal(api.inputs.protocolType, "WEBSOCKET");
    assert.equal(api.inputs.routeSelectionExpression, "$request.body.action");
    const stage = one(recorded, "aws:apigatewayv2/stage:Stage");
    assert.equal(stage.inputs.autoDeploy, true);
    assert.equal(stage.inputs.name, "stage");
    assert.equal(stage.inputs.defaultRouteSettings.throttlingRateLimit, 500);
    assert.equal(stage.inputs.defaultRouteSettings.throttlingBurstLimit, 1000);
    const format = JSON.parse(stage.inputs.accessLogSettings.format);
    assert.equal(format.connectionId, "$context.connectionId");
  });

  it("connects without IAM auth unless the stage asks for it", () => {
    const connect = ofType(recorded, "aws:apigatewayv2/route:Route").find((r) => r.inputs.routeKey === "$connect");
    assert.equal(connect?.inputs.authorizationType, "NONE");
  });

  it("gives every function exactly the permissions its code uses, scoped to its resources", () => {
    const policies = ofType(recorded, "aws:iam/rolePolicy:RolePolicy").filter((p) => p.name.startsWith("webchat-"));
    assert.equal(policies.length, FUNCTIONS.length);
    const table = one(recorded, "aws:dynamodb/table:Table");
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
      assert.deepEqual(actions("dynamodb:").sort(), [...PERMISSIONS[fn].dynamodb].sort(), fn);
      assert.equal(actions("events:").length > 0, PERMISSIONS[fn].putEvents, fn);
      const dynamo = statements.find((s) => [s.Action].flat().some((a: string) => a.startsWith("dynamodb:")));
      if (dynamo) assert.equal(dynamo.Resource, `arn:aws:dynamodb:eu-west-1:123456789012:table/${table.inputs.name ?? "connections-0123456"}`);
      const manage = statements.find((s) => [s.Action].flat().includes("execute-api:ManageConnections"));
      const methods = PERMISSIONS[fn].connections;
      if (methods.length === 0) {
        assert.equal(manage, undefined, `${fn} never calls @connections`);
      } else {
        assert.deepEqual(
          [manage.Resource].flat(),
          methods.map((m) => `arn:aws:execute-api:eu-west-1:123456789012:webchat-id/stage/${m}/@connections/*`),
        );
      }
      const logs = statements.find((s) => [s.Action].flat().includes("logs:PutLogEvents"));
      assert.match(logs.Resource, new RegExp(`log-group:/aws/lambda/webchat-stage-${fn}:\\*$`));
    }
  });

  it("keeps connections in an on-demand table with TTL on expiresAt and point-in-time recovery", () => {
    const table = one(recorded, "aws:dynamodb/table:Table");
    assert.equal(table.inputs.billingMode, "PAY_PER_REQUEST");
    assert.equal(table.inputs.hashKey, TABLE.key);
    assert.deepEqual(table.inputs.ttl, { attributeName: TABLE.ttlAttribute, enabled: true });
    assert.equal(table.inputs.pointInTimeRecovery.enabled, true);
  });

  it("builds one image per function from the Dockerfile and runs each function from its image", () => {
    const images = ofType(recorded, "docker-build:index:Image");
    assert.deepEqual(images.map((i) => i.inputs.buildArgs.HANDLER).sort(), [...FUNCTIONS].sort());
    for (const image of images) {
      assert.deepEqual(image.inputs.platforms, ["linux/arm64"]);
      assert.equal(image.inputs.push, true);
      assert.match(image.inputs.dockerfile.location, /\/Dockerfile$/);
      assert.ok(image.inputs.buildArgs.ADOT_LAYER_URL);
    }
    const repository = one(recorded, "aws:ecr/repository:Repository");
    assert.equal(repository.inputs.imageScanningConfiguration.scanOnPush, true);
    one(recorded, "aws:ecr/lifecyclePolicy:LifecyclePolicy");
    for (const fn of FUNCTIONS) {
      const lambda = functionNamed(fn);
      assert.equal(lambda.inputs.packageType, "Image");
      assert.match(lambda.inputs.imageUri, new RegExp(`:${fn}@sha256:`));
    }
  });

  it("configures every function from the stack: tracing, JSON logs, memory, environment", () => {
    for (const fn of FUNCTIONS) {
      const lambda = functionNamed(fn);
      assert.equal(lambda.inputs.tracingConfig.mode, "Active");
      assert.equal(lambda.inputs.loggingConfig.logFormat, "JSON");
      assert.equal(lambda.inputs.loggingConfig.applicationLogLevel, "INFO");
      assert.equal(lambda.inputs.memorySize, 1024);
      assert.deepEqual(lambda.inputs.architectures, ["arm64"]);
      const variables = lambda.inputs.environment.variables;
      assert.equal(variables[ENV.managementEndpoint], "https://webchat-id.execute-api.eu-west-1.amazonaws.com/stage");
      assert.ok(variables[ENV.table] && variables[ENV.eventBus] && variables[ENV.logLevel]);
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

  it("runs cleanup on the stage's schedule", () => {
    const schedule = one(recorded, "aws:scheduler/schedule:Schedule");
    assert.equal(schedule.inputs.scheduleExpression, "rate(7 minutes)");
    assert.match(schedule.inputs.target.arn, /function:webchat-stage-cleanup$/);
  });
});
