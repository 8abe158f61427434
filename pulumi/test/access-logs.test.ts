// Access logs are opt-in, and so is the account-wide setting they need (its own process: mocks
// are global).
import assert from "node:assert/strict";
import { it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { loadSettings } from "../settings";
import { ofType, one, synthesize } from "./helpers";

it("writes JSON access logs with the connection id, and sets API Gateway's CloudWatch role when asked", async () => {
  const recorded = await synthesize({ "webchat:accessLogs": "true", "webchat:manageApiGatewayAccount": "true" });
  const stage = one(recorded, "aws:apigatewayv2/stage:Stage");
  const format = JSON.parse(stage.inputs.accessLogSettings.format);
  assert.equal(format.connectionId, "$context.connectionId");
  const group = ofType(recorded, "aws:cloudwatch/logGroup:LogGroup").find((g) => g.name === "webchat-access");
  assert.ok(group);
  assert.equal(stage.inputs.accessLogSettings.destinationArn, `arn:aws:logs:eu-west-1:123456789012:log-group:${group.id}`);
  const account = one(recorded, "aws:apigateway/account:Account");
  const role = ofType(recorded, "aws:iam/role:Role").find((r) => r.name === "webchat-account");
  assert.ok(role);
  assert.equal(account.inputs.cloudwatchRoleArn, `arn:aws:iam::123456789012:role/${role.id}`);
  assert.deepEqual(JSON.parse(role.inputs.assumeRolePolicy).Statement[0].Principal, { Service: "apigateway.amazonaws.com" });
  const attachment = one(recorded, "aws:iam/rolePolicyAttachment:RolePolicyAttachment");
  assert.equal(attachment.inputs.policyArn, "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs");
});

it("refuses to manage the account setting for a stage without access logs", () => {
  pulumi.runtime.setAllConfig({ "aws:region": "eu-west-1", "webchat:manageApiGatewayAccount": "true" });
  assert.throws(() => loadSettings(), /webchat:manageApiGatewayAccount only serves webchat:accessLogs/);
});
