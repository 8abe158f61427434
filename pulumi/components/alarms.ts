// The stack's alarms, on the metrics the functions log (namespace METRICS_NAMESPACE, dimension
// Function), without actions: the stack has no topic to send them to, so they show in the
// CloudWatch console (add an SNS topic to `alarmActions` to be told). Two of them:
// - refusals sustained: the per-client limits refusing at least REFUSALS.threshold a minute, of
//   any kind, for REFUSALS.periods minutes running (a client hammering the chat, or limits set too
//   tight);
// - the fan-out ceiling: `@connections` answering 429 to the fan-outs' posts in 3 of 5 minutes
//   (the post rate budget is above what API Gateway gives the account).
// CloudWatch caps an alarm on metric math at 10 metrics (a hard limit, "Limits" in the alarms
// guide) and refuses SEARCH in alarms. The kinds of refusal are 17 metrics (a frame's are logged by
// each of the seven message routes' functions), so the refusals alarm sums `Refusals` instead,
// which every refusal of any kind also counts: 8 metrics, one a function that refuses.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ALL_REFUSALS, METRIC_FUNCTIONS } from "./dashboard";

/** The most metrics one metric math alarm may read (CloudWatch's hard limit). */
export const ALARM_METRICS = 10;

/** Refusals sustained: `Refusals` (every refusal, whatever its kind; not the connections closed,
 * each of which follows 100 refused frames), summed over the functions that log it, at least
 * `threshold` a minute in each of `periods` minutes running. */
export const REFUSALS = {
  ...ALL_REFUSALS,
  threshold: 100,
  periods: 5,
} as const;

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
 * alarm watches: the one query with `returnData` true, as PutMetricAlarm requires (each query is a
 * metric or an expression, never both). At most ALARM_METRICS metrics. */
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

export interface AlarmsArgs {
  /** The alarms' names: the refusals alarm is `<prefix>-refusals`, the fan-out ceiling
   * `<prefix>-fanout-ceiling`. */
  prefix: string;
  /** METRICS_NAMESPACE. */
  namespace: string;
}

export class Alarms extends pulumi.ComponentResource {
  /** Refusals sustained, of any kind. */
  public readonly refusals: aws.cloudwatch.MetricAlarm;
  /** The fan-outs' posts answered 429. */
  public readonly fanoutCeiling: aws.cloudwatch.MetricAlarm;

  constructor(name: string, args: AlarmsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Alarms", name, {}, opts);
    this.refusals = new aws.cloudwatch.MetricAlarm(
      `${name}-refusals`,
      {
        name: `${args.prefix}-refusals`,
        alarmDescription:
          `The per-client limits refused at least ${REFUSALS.threshold} a minute, of any kind, for ${REFUSALS.periods} ` +
          `minutes running (${REFUSALS.metric}, ${REFUSALS.functions.join(", ")}): a client keeps going past its ` +
          "limits, or a limit is too tight for the chat. The limits dashboard shows which kind, and when it began.",
        metricQueries: summedQueries(args.namespace, REFUSALS.metric, REFUSALS.functions, "refusals a minute, every kind, every function"),
        comparisonOperator: "GreaterThanOrEqualToThreshold",
        threshold: REFUSALS.threshold,
        evaluationPeriods: REFUSALS.periods,
        datapointsToAlarm: REFUSALS.periods,
        // a minute with no refusal logs nothing: that is the quiet state, not a gap
        treatMissingData: "notBreaching",
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
    this.registerOutputs({ refusals: this.refusals.name, fanoutCeiling: this.fanoutCeiling.name });
  }
}
