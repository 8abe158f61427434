// IAM auth on $connect follows the stack's iamAuth setting (its own process: mocks are global).
import assert from "node:assert/strict";
import { it } from "node:test";
import { ofType, synthesize } from "./helpers";

it("requires SigV4 on $connect, and only there, when the stage sets iamAuth", async () => {
  const recorded = await synthesize({ "webchat:iamAuth": "true", "webchat:architecture": "x86_64" });
  for (const route of ofType(recorded, "aws:apigatewayv2/route:Route")) {
    assert.equal(route.inputs.authorizationType, route.inputs.routeKey === "$connect" ? "AWS_IAM" : "NONE", route.inputs.routeKey);
  }
  for (const image of ofType(recorded, "docker-build:index:Image")) {
    assert.deepEqual(image.inputs.platforms, ["linux/amd64"]);
  }
});
