// The whole stack, composed from its components the way the architecture diagram reads:
// images → functions ← table, bus, API, shard queue; API routes → functions; bus → post;
// schedule → cleanup; shard queue → fanout; the dashboard over them all.
import * as pulumi from "@pulumi/pulumi";
import { ApiRoutes, WebSocketApi } from "./components/api";
import { Dashboard } from "./components/dashboard";
import { CleanupSchedule, WelcomeBus, WelcomeDelivery } from "./components/events";
import { Functions } from "./components/functions";
import { Images } from "./components/images";
import { MAX_RECEIVE_COUNT, ShardQueue, ShardWorkers } from "./components/shards";
import { ConnectionsTable } from "./components/table";
import { CLEANUP_FUNCTION, FUNCTIONS, ROUTES, SHARDS, WELCOME } from "./names";
import { Settings } from "./settings";

export interface StackOutputs {
  url: pulumi.Output<string>;
  managementEndpoint: pulumi.Output<string>;
  tableName: pulumi.Output<string>;
  busName: pulumi.Output<string>;
  repositoryUrl: pulumi.Output<string>;
  shardQueueUrl: pulumi.Output<string>;
  shardDeadLetterQueueUrl: pulumi.Output<string>;
  dashboardName: pulumi.Output<string>;
  dashboardUrl: pulumi.Output<string>;
}

/** The CloudWatch namespace of the stack's own metrics (METRICS_NAMESPACE). */
export function metricsNamespace(stack: string): string {
  return `webchat/${stack}`;
}

/** The stack, given its settings and the SHA-256 of the ADOT layer zip the images bake in. */
export function webchat(settings: Settings, adotLayerSha256: pulumi.Input<string>): StackOutputs {
  const images = new Images("webchat", {
    functions: FUNCTIONS,
    architecture: settings.architecture,
    adotLayerSha256,
  });
  const table = new ConnectionsTable("connections");
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
  });
  new ApiRoutes("webchat", {
    api,
    routes: Object.fromEntries(Object.entries(ROUTES).map(([routeKey, fn]) => [routeKey, functions.functions[fn]])),
    iamAuth: settings.iamAuth,
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
  const dashboard = new Dashboard("webchat", {
    // dashboard names allow letters, digits, - and _; stack names . as well
    dashboardName: `webchat-${settings.stack}`.replace(/[^A-Za-z0-9_-]/g, "-"),
    namespace: metricsNamespace(settings.stack),
    functions: FUNCTIONS.map((fn) => functions.functions[fn]),
    shardQueue: shards.queue,
    deadLetters: shards.deadLetters,
    postRateBudget: settings.postRateBudget,
  });
  return {
    url: api.url,
    managementEndpoint: api.managementEndpoint,
    tableName: table.table.name,
    busName: bus.bus.name,
    repositoryUrl: images.repository.repositoryUrl,
    shardQueueUrl: shards.queue.url,
    shardDeadLetterQueueUrl: shards.deadLetters.url,
    dashboardName: dashboard.dashboard.dashboardName,
    dashboardUrl: dashboard.url,
  };
}
