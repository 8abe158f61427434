// Sign-in with the stack's own Cognito pool (webchat:cognito): the pool, its app client, the
// authorizer wired to them, and the getToken output (its own process: mocks are global).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { AUTH_FLOWS } from "../components/cognito";
import { Recorded } from "../mocks";
import { AUTHORIZER } from "../names";
import { one, ofType, synthesizeStack } from "./helpers";

let recorded: Recorded[];
let outputs: Record<string, unknown>;
before(async () => {
  ({ recorded, outputs } = await synthesizeStack({ "webchat:cognito": "true" }));
});

const pool = () => one(recorded, "aws:cognito/userPool:UserPool");
const client = () => one(recorded, "aws:cognito/userPoolClient:UserPoolClient");
const issuer = () => `https://cognito-idp.eu-west-1.amazonaws.com/${pool().id}`;

describe("sign-in with the stack's Cognito pool", () => {
  it("makes a pool that signs people in by email and password, whose users only the operator creates", () => {
    const { inputs } = pool();
    assert.match(pool().id, /^eu-west-1_[A-Za-z0-9]{9}$/);
    assert.deepEqual(inputs.usernameAttributes, ["email"]);
    assert.equal(inputs.adminCreateUserConfig.allowAdminCreateUserOnly, true);
    assert.equal(inputs.mfaConfiguration, "OFF");
    assert.ok(inputs.passwordPolicy.minimumLength >= 12);
    assert.deepEqual(inputs.accountRecoverySetting.recoveryMechanisms, [{ name: "admin_only", priority: 1 }]);
    assert.equal(inputs.deletionProtection, "INACTIVE", "pulumi destroy can delete it");
  });

  it("gives it an app client without a secret that signs in from the AWS CLI, by SRP, and refreshes", () => {
    const { inputs } = client();
    assert.equal(inputs.userPoolId, pool().id);
    assert.equal(inputs.generateSecret, false);
    assert.deepEqual([...inputs.explicitAuthFlows].sort(), ["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH"]);
    assert.deepEqual(inputs.explicitAuthFlows, [...AUTH_FLOWS]);
    assert.equal(inputs.preventUserExistenceErrors, "ENABLED");
    assert.match(client().id, /^[a-z0-9]{26}$/);
  });

  it("configures the authorizer with the pool's issuer and the client's id as the audience", () => {
    const authorize = ofType(recorded, "aws:lambda/function:Function").find((f) => f.inputs.name === `webchat-stage-${AUTHORIZER.function}`);
    assert.ok(authorize);
    assert.deepEqual(authorize.inputs.environment.variables, { JWT_ISSUER: issuer(), JWT_AUDIENCE: client().id, LOG_LEVEL: "info" });
    const connect = ofType(recorded, "aws:apigatewayv2/route:Route").find((r) => r.inputs.routeKey === "$connect");
    assert.equal(connect?.inputs.authorizationType, "CUSTOM");
    assert.equal(connect?.inputs.authorizerId, one(recorded, "aws:apigatewayv2/authorizer:Authorizer").id);
  });

  it("exports the issuer, the client id, and the AWS CLI commands that make a user, get a token and connect", () => {
    assert.equal(outputs.jwtIssuer, issuer());
    assert.equal(outputs.jwtAudience, client().id);
    const lines = String(outputs.getToken).split("\n");
    const command = (start: string) => {
      const found = lines.find((l) => l.startsWith(start));
      assert.ok(found, start);
      return found;
    };
    const create = command("aws cognito-idp admin-create-user ");
    assert.ok(create.includes(`--region eu-west-1 --user-pool-id ${pool().id} --username "$EMAIL"`), create);
    assert.ok(create.includes("--message-action SUPPRESS"), create);
    assert.ok(command("aws cognito-idp admin-set-user-password ").endsWith(`--user-pool-id ${pool().id} --username "$EMAIL" --password "$PASSWORD" --permanent`));
    const signIn = command("TOKEN=$(aws cognito-idp initiate-auth ");
    assert.ok(signIn.includes(`--client-id ${client().id} --auth-flow USER_PASSWORD_AUTH`), signIn);
    assert.ok(signIn.includes(`--auth-parameters USERNAME="$EMAIL",PASSWORD="$PASSWORD"`), signIn);
    assert.ok(signIn.endsWith("--query AuthenticationResult.IdToken --output text)"), signIn);
    assert.equal(command("npx wscat "), `npx wscat -c "${outputs.url}?token=$TOKEN"`);
    // every line is a command or a comment: the output can be pasted into a shell
    for (const line of lines) assert.match(line, /^(#|aws |TOKEN=|npx |webchat )/, line);
  });
});
