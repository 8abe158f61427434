// The WebSocket API: $request.body.action route selection, a stage that deploys every change
// itself (autoDeploy) with throttling and, when asked, JSON access logs; then its routes, each a
// Lambda proxy integration with an invoke permission scoped to that route.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ROUTE_SELECTION } from "../names";

export interface WebSocketApiArgs {
  stageName: string;
  throttlingRateLimit: number;
  throttlingBurstLimit: number;
  logRetentionDays: number;
  /**
   * Write JSON access logs. API Gateway refuses a stage with access logs
   * (`CloudWatch Logs role ARN must be set in account settings`) until the account has a
   * CloudWatch role for API Gateway in the region: see `manageAccountRole`.
   */
  accessLogs: boolean;
  /** Create that role and set it on the account (a region-wide setting: see ApiGatewayAccount). */
  manageAccountRole: boolean;
}

const ACCESS_LOG_FORMAT = JSON.stringify({
  requestId: "$context.requestId",
  connectionId: "$context.connectionId",
  routeKey: "$context.routeKey",
  eventType: "$context.eventType",
  status: "$context.status",
  integrationStatus: "$context.integrationStatus",
  error: "$context.error.message",
  sourceIp: "$context.identity.sourceIp",
  userAgent: "$context.identity.userAgent",
  requestTime: "$context.requestTimeEpoch",
  integrationLatency: "$context.integrationLatency",
});

export class WebSocketApi extends pulumi.ComponentResource {
  public readonly api: aws.apigatewayv2.Api;
  public readonly stage: aws.apigatewayv2.Stage;
  /** `wss://{api-id}.execute-api.{region}.amazonaws.com/{stage}`, as AWS reports it. */
  public readonly url: pulumi.Output<string>;
  /** `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`: the management endpoint. */
  public readonly managementEndpoint: pulumi.Output<string>;
  /** `arn:aws:execute-api:{region}:{account}:{api-id}/{stage}` */
  public readonly stageArn: pulumi.Output<string>;

  constructor(name: string, args: WebSocketApiArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:WebSocketApi", name, {}, opts);
    this.api = new aws.apigatewayv2.Api(
      name,
      { protocolType: "WEBSOCKET", routeSelectionExpression: ROUTE_SELECTION },
      { parent: this },
    );
    let accessLogSettings: aws.types.input.apigatewayv2.StageAccessLogSettings | undefined;
    const dependsOn: pulumi.Resource[] = [];
    if (args.accessLogs) {
      const accessLogs = new aws.cloudwatch.LogGroup(
        `${name}-access`,
        { retentionInDays: args.logRetentionDays },
        { parent: this },
      );
      accessLogSettings = { destinationArn: accessLogs.arn, format: ACCESS_LOG_FORMAT };
      if (args.manageAccountRole) dependsOn.push(new ApiGatewayAccount(`${name}-account`, { parent: this }));
    }
    this.stage = new aws.apigatewayv2.Stage(
      name,
      {
        apiId: this.api.id,
        name: args.stageName,
        // Every route or integration change deploys by itself: no stale stage after `pulumi up`.
        autoDeploy: true,
        defaultRouteSettings: {
          throttlingRateLimit: args.throttlingRateLimit,
          throttlingBurstLimit: args.throttlingBurstLimit,
        },
        accessLogSettings,
      },
      { parent: this, dependsOn },
    );
    this.url = this.stage.invokeUrl;
    this.managementEndpoint = pulumi.interpolate`${this.api.apiEndpoint.apply((e) => e.replace(/^wss:/, "https:"))}/${this.stage.name}`;
    this.stageArn = this.stage.executionArn;
    this.registerOutputs({ url: this.url });
  }
}

/**
 * API Gateway's CloudWatch role for the account, in the stack's region: what a stage needs before
 * it may write access logs. It is one setting for every REST and WebSocket API of the account in
 * that region: creating it replaces any role already set, and `pulumi destroy` clears it (the AWS
 * provider resets the setting on delete), which stops the access logs of every other API there.
 */
export class ApiGatewayAccount extends pulumi.ComponentResource {
  constructor(name: string, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:ApiGatewayAccount", name, {}, opts);
    const role = new aws.iam.Role(
      name,
      {
        assumeRolePolicy: JSON.stringify({
          Version: "2012-10-17",
          Statement: [{ Effect: "Allow", Principal: { Service: "apigateway.amazonaws.com" }, Action: "sts:AssumeRole" }],
        }),
      },
      { parent: this },
    );
    const push = new aws.iam.RolePolicyAttachment(
      name,
      { role: role.name, policyArn: "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs" },
      { parent: this },
    );
    // API Gateway checks that it can assume the role and push logs when the setting is made.
    new aws.apigateway.Account(name, { cloudwatchRoleArn: role.arn }, { parent: this, dependsOn: [push] });
    this.registerOutputs({});
  }
}

export interface ApiRoutesArgs {
  api: WebSocketApi;
  /** Route key → the function that serves it. */
  routes: Record<string, aws.lambda.Function>;
  /** Require SigV4 (AWS_IAM) on `$connect`. */
  iamAuth: boolean;
  /** Or: the Lambda REQUEST authorizer every `$connect` must pass (CUSTOM; see authorizer.ts).
   * The settings refuse both at once: a route has one authorization type. */
  authorizerId?: pulumi.Input<string>;
}

/** How `$connect` is authorized; the other routes run on the connection it admitted. */
function connectAuthorization(args: ApiRoutesArgs): { authorizationType: string; authorizerId?: pulumi.Input<string> } {
  if (args.authorizerId !== undefined) return { authorizationType: "CUSTOM", authorizerId: args.authorizerId };
  return { authorizationType: args.iamAuth ? "AWS_IAM" : "NONE" };
}

/**
 * Each route of the API to its function, through a Lambda proxy integration, with an invoke
 * permission scoped to that route of this API.
 *
 * No route or integration response: `$connect`'s function answers the handshake through the proxy
 * integration itself, its `Sec-WebSocket-Protocol: webchat.v1` header included, which API Gateway
 * passes to the client as AWS's subprotocol example does with a plain Lambda proxy integration
 * (API Gateway developer guide, "Set up a $connect route that requires a WebSocket subprotocol").
 * Route responses only carry a message route's answer back as a frame, and the functions answer
 * with `@connections` posts instead.
 */
export class ApiRoutes extends pulumi.ComponentResource {
  constructor(name: string, args: ApiRoutesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:ApiRoutes", name, {}, opts);
    const api = args.api.api;
    for (const [routeKey, fn] of Object.entries(args.routes)) {
      const slug = routeKey.replace("$", "");
      const integration = new aws.apigatewayv2.Integration(
        `${name}-${slug}`,
        { apiId: api.id, integrationType: "AWS_PROXY", integrationUri: fn.invokeArn, integrationMethod: "POST" },
        { parent: this },
      );
      new aws.lambda.Permission(
        `${name}-${slug}`,
        {
          action: "lambda:InvokeFunction",
          function: fn.name,
          principal: "apigateway.amazonaws.com",
          sourceArn: pulumi.interpolate`${api.executionArn}/*/${routeKey}`,
        },
        { parent: this },
      );
      new aws.apigatewayv2.Route(
        `${name}-${slug}`,
        {
          apiId: api.id,
          routeKey,
          target: pulumi.interpolate`integrations/${integration.id}`,
          ...(routeKey === "$connect" ? connectAuthorization(args) : { authorizationType: "NONE" }),
        },
        { parent: this },
      );
    }
    this.registerOutputs({});
  }
}
