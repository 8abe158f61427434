// Sign-in with tokens of an issuer the stage names (webchat:jwtIssuer/jwtAudience): the
// authorizer's function, its REQUEST authorizer on $connect, the permissions sign-in adds, the
// outputs, and the settings it refuses (its own process: mocks are global).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { ACCOUNT, Recorded } from "../mocks";
import { AUTHORIZER, FUNCTIONS, MESSAGE_FUNCTIONS } from "../names";
import { loadSettings } from "../settings";
import { one, ofType, synthesizeStack } from "./helpers";

const ISSUER = "https://issuer.example.com/realms/chat";
const AUDIENCE = "webchat-client";

let recorded: Recorded[];
let outputs: Record<string, unknown>;
before(async () => {
  ({ recorded, outputs } = await synthesizeStack({
    "webchat:jwtIssuer": ISSUER,
    "webchat:jwtAudience": AUDIENCE,
    "webchat:logLevel": "debug",
  }));
});

function functionNamed(fn: string): Recorded {
  const found = ofType(recorded, "aws:lambda/function:Function").find((f) => f.inputs.name === `webchat-stage-${fn}`);
  assert.ok(found, `function ${fn}`);
  return found;
}

function statementsOf(policy: string): any[] {
  const found = ofType(recorded, "aws:iam/rolePolicy:RolePolicy").find((p) => p.name === policy);
  assert.ok(found, policy);
  return JSON.parse(found.inputs.policy).Statement;
}

const apiId = () => one(recorded, "aws:apigatewayv2/stage:Stage").inputs.apiId;

describe("sign-in with an issuer of the stage's choosing", () => {
  it("runs the authorizer from its own image, configured with the issuer, the audience and the log level only", () => {
    const authorize = functionNamed(AUTHORIZER.function);
    assert.deepEqual(authorize.inputs.environment.variables, { JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, LOG_LEVEL: "debug" });
    assert.equal(authorize.inputs.packageType, "Image");
    assert.match(authorize.inputs.imageUri, /@sha256:[0-9a-f]{64}$/);
    const image = ofType(recorded, "docker-build:index:Image").find((i) => i.inputs.buildArgs.HANDLER === AUTHORIZER.function);
    assert.ok(image, "an image built with HANDLER=authorize");
    assert.equal(authorize.inputs.imageUri.split("@")[1], image.id);
    // like every function: the stage's memory, timeout, architecture, tracing and JSON logs
    const connect = functionNamed("connect");
    for (const key of ["memorySize", "timeout", "architectures", "tracingConfig"]) {
      assert.deepEqual(authorize.inputs[key], connect.inputs[key], key);
    }
    assert.deepEqual(authorize.inputs.loggingConfig, { ...connect.inputs.loggingConfig, logGroup: `/aws/lambda/webchat-stage-${AUTHORIZER.function}` });
    assert.equal(ofType(recorded, "aws:lambda/function:Function").length, FUNCTIONS.length + 1);
    assert.equal(ofType(recorded, "docker-build:index:Image").length, FUNCTIONS.length + 1);
  });

  it("lets the authorizer write its own logs and traces, and nothing else: no table, no bus, no @connections", () => {
    const statements = statementsOf(`webchat-${AUTHORIZER.function}`);
    const actions = statements.flatMap((s) => [s.Action].flat()).sort();
    assert.deepEqual(actions, ["logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTelemetryRecords", "xray:PutTraceSegments"]);
    const logs = statements.find((s) => [s.Action].flat().includes("logs:PutLogEvents"));
    assert.equal(logs.Resource, `arn:aws:logs:eu-west-1:${ACCOUNT}:log-group:/aws/lambda/webchat-stage-${AUTHORIZER.function}:*`);
    const role = ofType(recorded, "aws:iam/role:Role").find((r) => r.name === `webchat-${AUTHORIZER.function}`);
    assert.deepEqual(JSON.parse(role!.inputs.assumeRolePolicy).Statement[0].Principal, { Service: "lambda.amazonaws.com" });
  });

  it("registers it as a REQUEST authorizer with no identity source, so that API Gateway calls it on every connect", () => {
    const authorizer = one(recorded, "aws:apigatewayv2/authorizer:Authorizer");
    assert.equal(authorizer.inputs.apiId, apiId());
    assert.equal(authorizer.inputs.authorizerType, "REQUEST");
    // the function's invokeArn
    assert.equal(
      authorizer.inputs.authorizerUri,
      `arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:${ACCOUNT}:function:webchat-stage-authorize/invocations`,
    );
    // a token may ride in Sec-WebSocket-Protocol or ?token=: a source for either would refuse the other
    assert.equal(authorizer.inputs.identitySources, undefined);
    // WebSocket APIs refuse a result TTL
    assert.equal(authorizer.inputs.authorizerResultTtlInSeconds, undefined);
  });

  it("lets API Gateway invoke the authorizer for this authorizer of this API only", () => {
    const authorizer = one(recorded, "aws:apigatewayv2/authorizer:Authorizer");
    const permissions = ofType(recorded, "aws:lambda/permission:Permission").filter((p) => p.inputs.function === `webchat-stage-${AUTHORIZER.function}`);
    assert.equal(permissions.length, 1);
    assert.equal(permissions[0].inputs.principal, "apigateway.amazonaws.com");
    assert.equal(permissions[0].inputs.action, "lambda:InvokeFunction");
    assert.equal(permissions[0].inputs.sourceArn, `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId()}/authorizers/${authorizer.id}`);
  });

  it("puts $connect, and only $connect, behind the authorizer", () => {
    const authorizer = one(recorded, "aws:apigatewayv2/authorizer:Authorizer");
    for (const route of ofType(recorded, "aws:apigatewayv2/route:Route")) {
      const connect = route.inputs.routeKey === "$connect";
      assert.equal(route.inputs.authorizationType, connect ? "CUSTOM" : "NONE", route.inputs.routeKey);
      assert.equal(route.inputs.authorizerId, connect ? authorizer.id : undefined, route.inputs.routeKey);
    }
  });

  it("lets the message routes' functions (default, broadcast, list, chat, join, leave, history) close a connection (DELETE @connections), and no other function", () => {
    assert.deepEqual([...MESSAGE_FUNCTIONS].sort(), ["broadcast", "chat", "default", "history", "join", "leave", "list"]);
    const stageArn = `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId()}/stage`;
    for (const fn of [...FUNCTIONS, AUTHORIZER.function]) {
      const manage = statementsOf(`webchat-${fn}`).find((s) => [s.Action].flat().includes("execute-api:ManageConnections"));
      const resources: string[] = manage ? [manage.Resource].flat() : [];
      assert.equal(resources.includes(`${stageArn}/DELETE/@connections/*`), MESSAGE_FUNCTIONS.includes(fn), fn);
      assert.ok(resources.every((r) => r.startsWith(`${stageArn}/`)), fn);
    }
  });

  it("lets connect count a user's connections: Query the user index, GET @connections, prune a gone one as chat does", () => {
    const arnOf = (name: string) => `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/${ofType(recorded, "aws:dynamodb/table:Table").find((t) => t.name === name)!.id}`;
    const tableArn = arnOf("connections");
    const statements = statementsOf("webchat-connect");
    const on = (resource: string) => statements.filter((s) => s.Resource === resource).flatMap((s) => [s.Action].flat()).sort();
    // its record; a gone one's rooms read, and the record deleted
    assert.deepEqual(on(tableArn), ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"]);
    assert.deepEqual(on(`${tableArn}/index/byUser`), ["dynamodb:Query"]);
    // the gone one's rooms left, as every prune leaves them
    assert.deepEqual(on(arnOf("rooms")), ["dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:UpdateItem"]);
    // each held connection asked after; presence frames to the rooms a gone one leaves
    const manage = statements.find((s) => [s.Action].flat().includes("execute-api:ManageConnections"));
    assert.deepEqual([manage?.Resource].flat(), ["GET", "POST"].map((m) => `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId()}/stage/${m}/@connections/*`));
    // the index is read by chat, and by connect, and no other function
    const querying = ofType(recorded, "aws:iam/rolePolicy:RolePolicy").filter((p) =>
      JSON.parse(p.inputs.policy).Statement.some((s: any) => s.Resource === `${tableArn}/index/byUser`),
    );
    assert.deepEqual(querying.map((p) => p.name).sort(), ["webchat-chat", "webchat-connect"]);
  });

  it("draws the authorizer's errors and throttles beside the other functions' on the functions dashboard", () => {
    const dashboard = ofType(recorded, "aws:cloudwatch/dashboard:Dashboard").find((d) => d.inputs.dashboardName === "webchat-stage-functions");
    assert.ok(dashboard);
    const body = JSON.parse(dashboard.inputs.dashboardBody);
    const lines: any[][] = body.widgets.flatMap((w: any) => w.properties.metrics);
    for (const metric of ["Errors", "Throttles"]) {
      assert.ok(lines.some((l) => l[0] === "AWS/Lambda" && l[1] === metric && l[3] === "webchat-stage-authorize"), metric);
    }
  });

  it("exports the issuer, the audience, and how to connect with a token of theirs", () => {
    assert.equal(outputs.jwtIssuer, ISSUER);
    assert.equal(outputs.jwtAudience, AUDIENCE);
    const getToken = String(outputs.getToken);
    assert.match(getToken, new RegExp(`token of ${ISSUER} whose aud`));
    assert.ok(getToken.includes(`npx wscat -c "${outputs.url}?token=$TOKEN"`), getToken);
    assert.ok(getToken.includes(`webchat connect ${outputs.url} --token "$TOKEN"`), getToken);
  });
});

describe("the sign-in settings", () => {
  const settingsWith = (config: Record<string, string>) => {
    pulumi.runtime.setAllConfig({ "aws:region": "eu-west-1", ...config });
    return loadSettings();
  };

  it("default to no sign-in", () => {
    const settings = settingsWith({});
    assert.equal(settings.jwt, undefined);
    assert.equal(settings.cognito, false);
  });

  it("refuse an issuer without an audience, and an audience without an issuer", () => {
    assert.throws(() => settingsWith({ "webchat:jwtIssuer": ISSUER }), /webchat:jwtIssuer and webchat:jwtAudience go together/);
    assert.throws(() => settingsWith({ "webchat:jwtAudience": AUDIENCE }), /webchat:jwtIssuer and webchat:jwtAudience go together/);
  });

  it("refuse an issuer that is not an https:// URL without query or fragment", () => {
    for (const issuer of ["http://issuer.example.com", "issuer.example.com", "https://issuer.example.com/?tenant=1", "https://issuer.example.com/#x"]) {
      assert.throws(() => settingsWith({ "webchat:jwtIssuer": issuer, "webchat:jwtAudience": AUDIENCE }), /webchat:jwtIssuer must be an https:\/\/ URL/, issuer);
    }
    // a trailing slash is part of some issuers' iss (Auth0's): kept exactly
    assert.equal(settingsWith({ "webchat:jwtIssuer": "https://tenant.example.com/", "webchat:jwtAudience": AUDIENCE }).jwt?.issuer, "https://tenant.example.com/");
  });

  it("refuse IAM auth together with sign-in, naming both settings", () => {
    assert.throws(
      () => settingsWith({ "webchat:iamAuth": "true", "webchat:jwtIssuer": ISSUER, "webchat:jwtAudience": AUDIENCE }),
      /webchat:iamAuth and sign-in \(webchat:jwtIssuer\/jwtAudience\) exclude each other/,
    );
    assert.throws(() => settingsWith({ "webchat:iamAuth": "true", "webchat:cognito": "true" }), /webchat:iamAuth and sign-in \(webchat:cognito\) exclude each other/);
  });

  it("refuse a Cognito pool together with another issuer", () => {
    assert.throws(() => settingsWith({ "webchat:cognito": "true", "webchat:jwtIssuer": ISSUER }), /webchat:cognito makes the stack's own issuer and audience/);
  });
});
