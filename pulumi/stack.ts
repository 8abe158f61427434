// The whole stack, composed from its components the way the architecture diagram reads:
// images → functions ← table, bus, API; API routes → functions; bus rule → post; schedule → cleanup.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { adotLayerUrl } from "./adot";
import { WebSocketApi } from "./components/api";
import { CleanupSchedule, WelcomeBus } from "./components/events";
import { Functions } from "./components/functions";
import { Images } from "./components/images";
import { ConnectionsTable } from "./components/table";
import { CLEANUP_FUNCTION, FUNCTIONS, ROUTES, WELCOME } from "./contract";
import { Settings } from "./settings";

export interface StackOutputs {
  url: pulumi.Output<string>;
  managementEndpoint: pulumi.Output<string>;
  tableName: pulumi.Output<string>;
  busName: pulumi.Output<string>;
  repositoryUrl: pulumi.Output<string>;
}

export function webchat(settings: Settings): StackOutputs {
  const prefix = `webchat-${settings.stack}`;
  const region = aws.getRegionOutput().region;
  const images = new Images("webchat", {
    functions: FUNCTIONS,
    architecture: settings.architecture,
    adotLayerUrl: region.apply((r) => adotLayerUrl(settings.adotLayerArn, r, settings.adotLayerUrl)),
  });
  const table = new ConnectionsTable("connections");
  const bus = new WelcomeBus("webchat");
  const api = new WebSocketApi("webchat", {
    stageName: settings.stack,
    throttlingRateLimit: settings.throttlingRateLimit,
    throttlingBurstLimit: settings.throttlingBurstLimit,
    logRetentionDays: settings.logRetentionDays,
  });
  const functions = new Functions("webchat", {
    prefix,
    functions: FUNCTIONS,
    images: images.refs,
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
  for (const [routeKey, fn] of Object.entries(ROUTES)) {
    api.route(routeKey, functions.functions[fn], settings.iamAuth);
  }
  bus.deliverTo(functions.functions[WELCOME.function]);
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
