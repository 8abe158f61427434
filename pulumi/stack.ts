// The whole stack, composed from its components the way the architecture diagram reads:
// images → functions ← table, bus, API; API routes → functions; bus → post; schedule → cleanup.
import * as pulumi from "@pulumi/pulumi";
import { ApiRoutes, WebSocketApi } from "./components/api";
import { CleanupSchedule, WelcomeBus, WelcomeDelivery } from "./components/events";
import { Functions } from "./components/functions";
import { Images } from "./components/images";
import { ConnectionsTable } from "./components/table";
import { CLEANUP_FUNCTION, FUNCTIONS, ROUTES, WELCOME } from "./names";
import { Settings } from "./settings";

export interface StackOutputs {
  url: pulumi.Output<string>;
  managementEndpoint: pulumi.Output<string>;
  tableName: pulumi.Output<string>;
  busName: pulumi.Output<string>;
  repositoryUrl: pulumi.Output<string>;
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
    architecture: settings.architecture,
    logRetentionDays: settings.logRetentionDays,
    fanoutConcurrency: settings.fanoutConcurrency,
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
  return {
    url: api.url,
    managementEndpoint: api.managementEndpoint,
    tableName: table.table.name,
    busName: bus.bus.name,
    repositoryUrl: images.repository.repositoryUrl,
  };
}
