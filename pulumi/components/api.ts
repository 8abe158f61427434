// The WebSocket API: $request.body.action route selection, a stage that deploys every change
// itself (autoDeploy), throttling, and JSON access logs with the connection id.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ROUTE_SELECTION } from "../contract";

export interface WebSocketApiArgs {
  stageName: string;
  throttlingRateLimit: number;
  throttlingBurstLimit: number;
  logRetentionDays: number;
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
  /** `wss://{api-id}.execute-api.{region}.amazonaws.com/{stage}` */
  public readonly url: pulumi.Output<string>;
  /** `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`: the management endpoint. */
  public readonly managementEndpoint: pulumi.Output<string>;
  /** `arn:aws:execute-api:{region}:{account}:{api-id}/{stage}` */
  public readonly stageArn: pulumi.Output<string>;
  private readonly name: string;

  constructor(name: string, args: WebSocketApiArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:WebSocketApi", name, {}, opts);
    this.name = name;
    this.api = new aws.apigatewayv2.Api(
      name,
      { protocolType: "WEBSOCKET", routeSelectionExpression: ROUTE_SELECTION },
      { parent: this },
    );
    const accessLogs = new aws.cloudwatch.LogGroup(
      `${name}-access`,
      { retentionInDays: args.logRetentionDays },
      { parent: this },
    );
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
        accessLogSettings: { destinationArn: accessLogs.arn, format: ACCESS_LOG_FORMAT },
      },
      { parent: this },
    );
    const region = aws.getRegionOutput({}, { parent: this }).region;
    this.url = pulumi.interpolate`wss://${this.api.id}.execute-api.${region}.amazonaws.com/${this.stage.name}`;
    this.managementEndpoint = pulumi.interpolate`https://${this.api.id}.execute-api.${region}.amazonaws.com/${this.stage.name}`;
    this.stageArn = pulumi.interpolate`${this.api.executionArn}/${this.stage.name}`;
    this.registerOutputs({ url: this.url });
  }

  /** Routes `routeKey` to `fn` through a Lambda proxy integration, with an invoke permission
   * scoped to that route of this API. */
  public route(routeKey: string, fn: aws.lambda.Function, iamAuth: boolean): aws.apigatewayv2.Route {
    const slug = routeKey.replace("$", "");
    const integration = new aws.apigatewayv2.Integration(
      `${this.name}-${slug}`,
      { apiId: this.api.id, integrationType: "AWS_PROXY", integrationUri: fn.invokeArn, integrationMethod: "POST" },
      { parent: this },
    );
    new aws.lambda.Permission(
      `${this.name}-${slug}`,
      {
        action: "lambda:InvokeFunction",
        function: fn.name,
        principal: "apigateway.amazonaws.com",
        sourceArn: pulumi.interpolate`${this.api.executionArn}/*/${routeKey}`,
      },
      { parent: this },
    );
    return new aws.apigatewayv2.Route(
      `${this.name}-${slug}`,
      {
        apiId: this.api.id,
        routeKey,
        target: pulumi.interpolate`integrations/${integration.id}`,
        authorizationType: routeKey === "$connect" && iamAuth ? "AWS_IAM" : "NONE",
      },
      { parent: this },
    );
  }
}
