// The stack's alarms, on the metrics the functions log (namespace METRICS_NAMESPACE, dimension
// Function), without actions: the stack has no topic to send them to, so they show in the
// CloudWatch console (add an SNS topic to `alarmActions` to be told). Two of them:
// - refusals sustained: the per-client limits refusing at least REFUSALS.threshold of a kind a
//   minute for REFUSALS.periods minutes running (a client hammering the chat, or limits set too
//   tight);
// - the fan-out ceiling: `@connections` answering 429 to the fan-outs' posts in 3 of 5 minutes
//   (the post rate budget is above what API Gateway gives the account).
// CloudWatch caps an alarm on metric math at 10 metrics (a hard limit, "Limits" in the alarms
// guide) and refuses SEARCH in alarms. A frame's refusals are logged by each of the seven message
// routes' functions, 17 metrics for the five kinds, so they are one metric alarm per kind, each
// summing its functions, and a composite alarm over those (any of them in ALARM) is the refusals
// alarm. So it watches each kind's sum, not the sum of the kinds: 60 refused frames and 60 refused
// broadcasts a minute set off none.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { LIMITS, METRIC_FUNCTIONS } from "./dashboard";

/** The most metrics one metric math alarm may read (CloudWatch's hard limit). */
export const ALARM_METRICS = 10;

/** Refusals sustained: each kind, summed over the functions that log it, at least `threshold` a
 * minute in each of `periods` minutes running. RefusedDeliveries is left out (it counts the
 * audiences of refused broadcasts, which RefusedBroadcasts already counts once each), and so are
 * the connections closed (each follows 100 refused frames). */
export const REFUSALS = {
  kinds: [LIMITS.refusedFrames, LIMITS.refusedUserFrames, LIMITS.refusedBroadcasts, LIMITS.forbiddenBroadcasts, LIMITS.refusedConnects],
  threshold: 100,
  periods: 5,
} as const;

/** The settings behind each kind of refusal, for the alarm's description. */
const SETTINGS: Readonly<Record<string, string>> = {
  [LIMITS.refusedFrames.metric]: "webchat:frameRate and frameBurst",
  [LIMITS.refusedUserFrames.metric]: "webchat:userFrameRate",
  [LIMITS.refusedBroadcasts.metric]: "webchat:deliveryBudget",
  [LIMITS.forbiddenBroadcasts.metric]: "webchat:deliveryBudget and everyoneBroadcast",
  [LIMITS.refusedConnects.metric]: "webchat:connectionsPerUser",
};

/** The fan-out ceiling: the 429 answers the fan-outs met (`Throttled`, one of COUNTS.outcomes:
 * each retried within the budget, or a failed post), more than none in `datapoints` of `periods`
 * minutes. */
export const FANOUT_CEILING = {
  metric: "Throttled",
  functions: METRIC_FUNCTIONS,
  datapoints: 3,
  periods: 5,
} as const;

/** An alarm's queries: each function's count of `metric` a minute (Sum), and their sum, which the
 * alarm watches. */
export function summedQueries(
  namespace: string,
  metric: string,
  functions: readonly string[],
  label: string,
): aws.types.input.cloudwatch.MetricAlarmMetricQuery[] {
  if (functions.length > ALARM_METRICS) {
    throw new Error(`an alarm on ${metric} of ${functions.length} functions reads more than CloudWatch's ${ALARM_METRICS} metrics`);
  }
  const ids = functions.map((_, i) => `m${i}`);
  return [
    { id: "total", expression: `SUM([${ids.join(",")}])`, label, returnData: true },
    ...functions.map((fn, i) => ({
      id: ids[i],
      metric: { namespace, metricName: metric, dimensions: { Function: fn }, period: 60, stat: "Sum" },
      returnData: false,
    })),
  ];
}

/** `RefusedUserFrames` → `refused-user-frames`. */
function kebab(metric: string): string {
  return metric.replace(/(?<!^)([A-Z])/g, "-$1").toLowerCase();
}

export interface AlarmsArgs {
  /** The alarms' names: the refusals alarm is `<prefix>-refusals` (its kinds
   * `<prefix>-refusals-<kind>`), the fan-out ceiling `<prefix>-fanout-ceiling`. */
  prefix: string;
  /** METRICS_NAMESPACE. */
  namespace: string;
}

export class Alarms extends pulumi.ComponentResource {
  /** Refusals sustained, of any kind: ALARM when one of `refusalsByKind` is. */
  public readonly refusals: aws.cloudwatch.CompositeAlarm;
  /** One alarm per kind of refusal, each on the sum of its functions' counts. */
  public readonly refusalsByKind: aws.cloudwatch.MetricAlarm[];
  /** The fan-outs' posts answered 429. */
  public readonly fanoutCeiling: aws.cloudwatch.MetricAlarm;

  constructor(name: string, args: AlarmsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Alarms", name, {}, opts);
    this.refusalsByKind = REFUSALS.kinds.map(
      (kind) =>
        new aws.cloudwatch.MetricAlarm(
          `${name}-refusals-${kebab(kind.metric)}`,
          {
            name: `${args.prefix}-refusals-${kebab(kind.metric)}`,
            alarmDescription:
              `${kind.metric} (${kind.functions.join(", ")}) at least ${REFUSALS.threshold} a minute for ` +
              `${REFUSALS.periods} minutes: a client keeps going past its limits, or ${SETTINGS[kind.metric]} ` +
              "is too tight for the chat. The limits dashboard shows when it began.",
            metricQueries: summedQueries(args.namespace, kind.metric, kind.functions, `${kind.metric} a minute, every function`),
            comparisonOperator: "GreaterThanOrEqualToThreshold",
            threshold: REFUSALS.threshold,
            evaluationPeriods: REFUSALS.periods,
            datapointsToAlarm: REFUSALS.periods,
            // a minute with no refusal logs nothing: that is the quiet state, not a gap
            treatMissingData: "notBreaching",
          },
          { parent: this },
        ),
    );
    // a rule names its alarms: referring to their names (outputs) makes Pulumi create them first
    // and delete them last, as CloudWatch requires of alarms a composite alarm depends on
    const rule = pulumi
      .all(this.refusalsByKind.map((alarm) => alarm.name))
      .apply((names) => names.map((alarm) => `ALARM("${alarm}")`).join(" OR "));
    this.refusals = new aws.cloudwatch.CompositeAlarm(
      `${name}-refusals`,
      {
        alarmName: `${args.prefix}-refusals`,
        alarmDescription:
          `The per-client limits refused at least ${REFUSALS.threshold} of one kind a minute for ${REFUSALS.periods} ` +
          `minutes running: one of ${args.prefix}-refusals-<kind> is in ALARM, and its description says which ` +
          "setting is behind it. (One alarm per kind: CloudWatch caps an alarm on metric math at 10 metrics, and " +
          "a frame's kinds are logged by seven functions each.)",
        alarmRule: rule,
      },
      { parent: this },
    );
    this.fanoutCeiling = new aws.cloudwatch.MetricAlarm(
      `${name}-fanout-ceiling`,
      {
        name: `${args.prefix}-fanout-ceiling`,
        alarmDescription:
          `@connections answered 429 to the fan-outs' posts (${FANOUT_CEILING.metric}, ${FANOUT_CEILING.functions.join(" and ")}) ` +
          `in ${FANOUT_CEILING.datapoints} of ${FANOUT_CEILING.periods} minutes: the fan-outs reach API Gateway's account ` +
          "throttle. Lower webchat:postRateBudget, or ask AWS for a higher throttle.",
        metricQueries: summedQueries(args.namespace, FANOUT_CEILING.metric, FANOUT_CEILING.functions, "posts answered 429 a minute"),
        comparisonOperator: "GreaterThanThreshold",
        threshold: 0,
        evaluationPeriods: FANOUT_CEILING.periods,
        datapointsToAlarm: FANOUT_CEILING.datapoints,
        treatMissingData: "notBreaching",
      },
      { parent: this },
    );
    this.registerOutputs({ refusals: this.refusals.alarmName, fanoutCeiling: this.fanoutCeiling.name });
  }
}
