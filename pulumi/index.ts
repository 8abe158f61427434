// The Pulumi program: `pulumi up -s stage` deploys webchat; `pulumi destroy` removes it.
// Settings come from Pulumi.<stack>.yaml at the repository root (see settings.ts for defaults).
import { stackAdotLayer } from "./adot";
import { loadSettings } from "./settings";
import { webchat } from "./stack";

const settings = loadSettings();
const outputs = webchat(settings, stackAdotLayer(settings));

/** The URL to give wscat or the browser page. */
export const url = outputs.url;
/** API Gateway's management endpoint (WEBSOCKET_API_ENDPOINT). */
export const managementEndpoint = outputs.managementEndpoint;
export const tableName = outputs.tableName;
/** The rooms table (ROOMS_TABLE): members, counters and history of every room. */
export const roomsTableName = outputs.roomsTableName;
export const busName = outputs.busName;
export const repositoryUrl = outputs.repositoryUrl;
/** The queue of shard jobs, and the dead-letter queue of jobs that failed three times. */
export const shardQueueUrl = outputs.shardQueueUrl;
export const shardDeadLetterQueueUrl = outputs.shardDeadLetterQueueUrl;
/** The CloudWatch dashboard of the chat: broadcasts, fan-outs, the post rate, cleanup, rooms. */
export const dashboardName = outputs.dashboardName;
export const dashboardUrl = outputs.dashboardUrl;
/** The CloudWatch dashboard of the functions: every function's errors and throttles, the queues. */
export const functionsDashboardName = outputs.functionsDashboardName;
export const functionsDashboardUrl = outputs.functionsDashboardUrl;
/** The CloudWatch dashboard of the per-client limits: what they refused, by kind. */
export const limitsDashboardName = outputs.limitsDashboardName;
export const limitsDashboardUrl = outputs.limitsDashboardUrl;
/** The alarms (no actions: they show in the CloudWatch console): the limits refusing at least
 * 100 a minute, of any kind, for 5 minutes, and the fan-outs' posts answered 429 in 3 of 5 minutes. */
export const refusalsAlarmName = outputs.refusalsAlarmName;
export const fanoutCeilingAlarmName = outputs.fanoutCeilingAlarmName;
/** With sign-in (webchat:jwtIssuer/jwtAudience or webchat:cognito): the tokens' issuer and
 * audience, and how to get a token and connect with it. Null without. */
export const jwtIssuer = outputs.jwtIssuer;
export const jwtAudience = outputs.jwtAudience;
export const getToken = outputs.getToken;
