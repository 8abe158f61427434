// The whole stack, composed from its components the way the architecture diagram reads:
// images → functions ← tables (connections, rooms), bus, API, shard queue; API routes →
// functions; bus → post; schedule → cleanup; shard queue → fanout; the three dashboards and the
// alarms over them all. With sign-in, $connect passes the authorizer first, which checks tokens of the stage's
// issuer or of the stack's own Cognito pool.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { Alarms, REFUSALS } from "./components/alarms";
import { ApiRoutes, WebSocketApi } from "./components/api";
import { ConnectAuthorizer } from "./components/authorizer";
import { CognitoSignIn, cognitoTokenInstructions, issuerTokenInstructions } from "./components/cognito";
import { Dashboard } from "./components/dashboard";
import { CleanupSchedule, WelcomeBus, WelcomeDelivery } from "./components/events";
import { Functions } from "./components/functions";
import { Images } from "./components/images";
import { MAX_RECEIVE_COUNT, ShardQueue, ShardWorkers } from "./components/shards";
import { ConnectionsTable, RoomsTable } from "./components/table";
import { AUTHORIZER, CLEANUP_FUNCTION, FUNCTIONS, ROUTES, SHARDS, WELCOME } from "./names";
import { Settings } from "./settings";

export interface StackOutputs {
  url: pulumi.Output<string>;
  managementEndpoint: pulumi.Output<string>;
  tableName: pulumi.Output<string>;
  roomsTableName: pulumi.Output<string>;
  busName: pulumi.Output<string>;
  repositoryUrl: pulumi.Output<string>;
  shardQueueUrl: pulumi.Output<string>;
  shardDeadLetterQueueUrl: pulumi.Output<string>;
  /** The chat dashboard: fan-outs, post rate, cleanup, rooms. */
  dashboardName: pulumi.Output<string>;
  dashboardUrl: pulumi.Output<string>;
  /** The functions dashboard: every function's errors and throttles, and the shard queues. */
  functionsDashboardName: pulumi.Output<string>;
  functionsDashboardUrl: pulumi.Output<string>;
  /** The limits dashboard: what the per-client limits refused. */
  limitsDashboardName: pulumi.Output<string>;
  limitsDashboardUrl: pulumi.Output<string>;
  /** The alarms: refusals sustained (of any kind, summed over the functions that refuse), and
   * the fan-outs' posts answered 429. */
  refusalsAlarmName: pulumi.Output<string>;
  fanoutCeilingAlarmName: pulumi.Output<string>;
  /** With sign-in: the tokens' issuer and audience, and how to get a token and connect with it;
   * null without. */
  jwtIssuer: pulumi.Output<string | null>;
  jwtAudience: pulumi.Output<string | null>;
  getToken: pulumi.Output<string | null>;
}

/** The CloudWatch namespace of the stack's own metrics (METRICS_NAMESPACE). */
export function metricsNamespace(stack: string): string {
  return `webchat/${stack}`;
}

/** The first part of the names of the stack's dashboards and alarms: `webchat-<stack>`, with
 * what a dashboard name does not allow (letters, digits, - and _ only; stack names allow . too)
 * made a dash. */
export function namePrefix(stack: string): string {
  return `webchat-${stack}`.replace(/[^A-Za-z0-9_-]/g, "-");
}

/** The stack, given its settings and the SHA-256 of the ADOT layer zip the images bake in. */
export function webchat(settings: Settings, adotLayerSha256: pulumi.Input<string>): StackOutputs {
  // sign-in: tokens of the stack's own Cognito pool, of an issuer the stage names, or none
  const cognito = settings.cognito ? new CognitoSignIn("signin") : undefined;
  const tokens = cognito ? { issuer: cognito.issuer, audience: cognito.audience } : settings.jwt;
  const images = new Images("webchat", {
    functions: tokens ? [...FUNCTIONS, AUTHORIZER.function] : FUNCTIONS,
    architecture: settings.architecture,
    adotLayerSha256,
  });
  const table = new ConnectionsTable("connections");
  const rooms = new RoomsTable("rooms");
  const bus = new WelcomeBus("webchat");
  const api = new WebSocketApi("webchat", {
    stageName: settings.stack,
    throttlingRateLimit: settings.throttlingRateLimit,
    throttlingBurstLimit: settings.throttlingBurstLimit,
    logRetentionDays: settings.logRetentionDays,
    accessLogs: settings.accessLogs,
    manageAccountRole: settings.manageApiGatewayAccount,
  });
  const shards = new ShardQueue("shards", { workerTimeout: settings.fanoutTimeout });
  const functions = new Functions("webchat", {
    prefix: `webchat-${settings.stack}`,
    functions: FUNCTIONS,
    images: images.uris,
    tableName: table.table.name,
    tableArn: table.table.arn,
    busName: bus.bus.name,
    busArn: bus.bus.arn,
    managementEndpoint: api.managementEndpoint,
    stageArn: api.stageArn,
    signIn: tokens !== undefined,
    logLevel: settings.logLevel,
    memory: settings.memory,
    timeout: settings.timeout,
    timeouts: { [SHARDS.function]: settings.fanoutTimeout },
    architecture: settings.architecture,
    logRetentionDays: settings.logRetentionDays,
    fanoutConcurrency: settings.fanoutConcurrency,
    metricsNamespace: metricsNamespace(settings.stack),
    sharding: {
      queueUrl: shards.queue.url,
      queueArn: shards.queue.arn,
      // each invocation's share: every worker at once stays within the budget
      postRate: Math.floor(settings.postRateBudget / settings.fanoutWorkers),
      scanPageSize: settings.scanPageSize,
      workers: settings.fanoutWorkers,
      attempts: MAX_RECEIVE_COUNT,
    },
    rooms: {
      tableName: rooms.table.name,
      tableArn: rooms.table.arn,
      historyDays: settings.historyDays,
      presenceLimit: settings.presenceLimit,
    },
    limits: {
      frameRate: settings.frameRate,
      frameBurst: settings.frameBurst,
      userFrameRate: settings.userFrameRate,
      deliveryBudget: settings.deliveryBudget,
      connectionsPerUser: settings.connectionsPerUser,
      everyoneBroadcast: settings.everyoneBroadcast,
    },
  });
  const authorizer = tokens
    ? new ConnectAuthorizer("webchat", {
        api: api.api,
        prefix: `webchat-${settings.stack}`,
        image: images.uris[AUTHORIZER.function],
        issuer: tokens.issuer,
        audience: tokens.audience,
        logLevel: settings.logLevel,
        memory: settings.memory,
        timeout: settings.timeout,
        architecture: settings.architecture,
        logRetentionDays: settings.logRetentionDays,
      })
    : undefined;
  new ApiRoutes("webchat", {
    api,
    routes: Object.fromEntries(Object.entries(ROUTES).map(([routeKey, fn]) => [routeKey, functions.functions[fn]])),
    iamAuth: settings.iamAuth,
    authorizerId: authorizer?.authorizer.id,
  });
  new WelcomeDelivery("welcome", { bus: bus.bus, post: functions.functions[WELCOME.function] });
  new CleanupSchedule("cleanup", {
    cleanup: functions.functions[CLEANUP_FUNCTION],
    scheduleExpression: settings.cleanupSchedule,
  });
  new ShardWorkers("shards", {
    queue: shards.queue,
    worker: functions.functions[SHARDS.function],
    batchSize: SHARDS.batchSize,
    workers: settings.fanoutWorkers,
  });
  const prefix = namePrefix(settings.stack);
  const dashboard = new Dashboard("webchat", {
    // three, each within the free tier's 50 metrics: the chat's, the functions' and the limits'
    dashboardNames: { chat: prefix, functions: `${prefix}-functions`, limits: `${prefix}-limits` },
    namespace: metricsNamespace(settings.stack),
    // the authorizer's Errors include every refused connect: `Unauthorized` is a function error
    functions: [...FUNCTIONS.map((fn) => functions.functions[fn]), ...(authorizer ? [authorizer.function] : [])],
    shardQueue: shards.queue,
    deadLetters: shards.deadLetters,
    postRateBudget: settings.postRateBudget,
    refusalsAlarm: { threshold: REFUSALS.threshold, periods: REFUSALS.periods },
  });
  const alarms = new Alarms("webchat", { prefix, namespace: metricsNamespace(settings.stack) });
  return {
    url: api.url,
    managementEndpoint: api.managementEndpoint,
    tableName: table.table.name,
    roomsTableName: rooms.table.name,
    busName: bus.bus.name,
    repositoryUrl: images.repository.repositoryUrl,
    shardQueueUrl: shards.queue.url,
    shardDeadLetterQueueUrl: shards.deadLetters.url,
    dashboardName: dashboard.dashboard.dashboardName,
    dashboardUrl: dashboard.url,
    functionsDashboardName: dashboard.functionsDashboard.dashboardName,
    functionsDashboardUrl: dashboard.functionsUrl,
    limitsDashboardName: dashboard.limitsDashboard.dashboardName,
    limitsDashboardUrl: dashboard.limitsUrl,
    refusalsAlarmName: alarms.refusals.name,
    fanoutCeilingAlarmName: alarms.fanoutCeiling.name,
    jwtIssuer: tokens ? pulumi.output(tokens.issuer) : pulumi.output(null),
    jwtAudience: tokens ? pulumi.output(tokens.audience) : pulumi.output(null),
    getToken: getToken(settings, api.url, cognito),
  };
}

/** The `getToken` output: with the stack's pool, the commands that make a user and get a token;
 * with another issuer, which token to get; either way how to connect with it. */
function getToken(settings: Settings, url: pulumi.Output<string>, cognito?: CognitoSignIn): pulumi.Output<string | null> {
  if (cognito) {
    const region = aws.getRegionOutput({}, { parent: cognito }).region;
    return pulumi
      .all([region, cognito.pool.id, cognito.client.id, url])
      .apply(([region, poolId, clientId, url]) => cognitoTokenInstructions({ region, poolId, clientId, url }));
  }
  const jwt = settings.jwt;
  if (jwt) return url.apply((url) => issuerTokenInstructions({ issuer: jwt.issuer, audience: jwt.audience, url }));
  return pulumi.output(null);
}
