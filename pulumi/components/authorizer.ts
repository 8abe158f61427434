// Sign-in on $connect: the `authorize` function, registered on the API as a Lambda REQUEST
// authorizer, and API Gateway's permission to invoke it for that authorizer only. The function
// reads no table and calls no AWS API: its role may write its logs and traces, nothing more. Its
// one other call is to the issuer, over the internet, for the issuer's keys (a Lambda outside a
// VPC has that access without any permission).
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { AUTHORIZER, ENV } from "../names";
import { imageFunction, logStatements } from "./functions";

export interface ConnectAuthorizerArgs {
  api: aws.apigatewayv2.Api;
  /** The function is `<prefix>-authorize`. */
  prefix: string;
  /** Its image URI, in a form Lambda accepts (`repo@sha256:…`). */
  image: pulumi.Input<string>;
  /** The tokens' `iss`, exactly (JWT_ISSUER). */
  issuer: pulumi.Input<string>;
  /** The tokens' `aud`, or an access token's `client_id` (JWT_AUDIENCE). */
  audience: pulumi.Input<string>;
  logLevel: string;
  memory: number;
  timeout: number;
  architecture: "arm64" | "x86_64";
  logRetentionDays: number;
}

export class ConnectAuthorizer extends pulumi.ComponentResource {
  public readonly function: aws.lambda.Function;
  public readonly authorizer: aws.apigatewayv2.Authorizer;

  constructor(name: string, args: ConnectAuthorizerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:ConnectAuthorizer", name, {}, opts);
    const fn = AUTHORIZER.function;
    this.function = imageFunction(
      `${name}-${fn}`,
      {
        functionName: `${args.prefix}-${fn}`,
        image: args.image,
        policy: (logGroupArn) =>
          logGroupArn.apply((arn) => JSON.stringify({ Version: "2012-10-17", Statement: logStatements(arn) })),
        environment: {
          [AUTHORIZER.environment.issuer]: args.issuer,
          [AUTHORIZER.environment.audience]: args.audience,
          [ENV.logLevel]: args.logLevel,
        },
        logLevel: args.logLevel,
        memory: args.memory,
        timeout: args.timeout,
        architecture: args.architecture,
        logRetentionDays: args.logRetentionDays,
      },
      this,
    );
    this.authorizer = new aws.apigatewayv2.Authorizer(
      name,
      {
        apiId: args.api.id,
        authorizerType: "REQUEST",
        authorizerUri: this.function.invokeArn,
        // No identity source. With one, API Gateway answers 401 without calling the function
        // when that source is missing, and a token rides in either of two places: after
        // webchat.v1 in Sec-WebSocket-Protocol (browsers can set no other header) or in
        // ?token= (wscat). A WebSocket API caches no authorizer result either way, so the
        // function runs on every connect. No result TTL: AWS refuses one on WebSocket APIs.
      },
      { parent: this },
    );
    new aws.lambda.Permission(
      name,
      {
        action: "lambda:InvokeFunction",
        function: this.function.name,
        principal: "apigateway.amazonaws.com",
        // this authorizer of this API, and nothing else of it
        sourceArn: pulumi.interpolate`${args.api.executionArn}/authorizers/${this.authorizer.id}`,
      },
      { parent: this },
    );
    this.registerOutputs({});
  }
}
