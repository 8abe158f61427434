// The bus `connect` puts welcome events on; the rule that delivers them to `post`, with a
// dead-letter queue; and the schedule that runs `cleanup`.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { WELCOME } from "../names";

export class WelcomeBus extends pulumi.ComponentResource {
  public readonly bus: aws.cloudwatch.EventBus;

  constructor(name: string, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:WelcomeBus", name, {}, opts);
    this.bus = new aws.cloudwatch.EventBus(name, {}, { parent: this });
    this.registerOutputs({ bus: this.bus.name });
  }
}

export interface WelcomeDeliveryArgs {
  bus: aws.cloudwatch.EventBus;
  post: aws.lambda.Function;
}

/** Routes welcome events to `post`; events it cannot deliver go to a dead-letter queue. */
export class WelcomeDelivery extends pulumi.ComponentResource {
  public readonly deadLetters: aws.sqs.Queue;

  constructor(name: string, args: WelcomeDeliveryArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:WelcomeDelivery", name, {}, opts);
    this.deadLetters = new aws.sqs.Queue(`${name}-dead-letters`, { messageRetentionSeconds: 14 * 24 * 3600 }, { parent: this });
    const rule = new aws.cloudwatch.EventRule(
      name,
      {
        eventBusName: args.bus.name,
        eventPattern: JSON.stringify({ source: [WELCOME.source], "detail-type": [WELCOME.detailType] }),
      },
      { parent: this },
    );
    new aws.sqs.QueuePolicy(
      `${name}-dead-letters`,
      {
        queueUrl: this.deadLetters.url,
        policy: pulumi.all([this.deadLetters.arn, rule.arn]).apply(([queueArn, ruleArn]) =>
          JSON.stringify({
            Version: "2012-10-17",
            Statement: [
              {
                Effect: "Allow",
                Principal: { Service: "events.amazonaws.com" },
                Action: "sqs:SendMessage",
                Resource: queueArn,
                Condition: { ArnEquals: { "aws:SourceArn": ruleArn } },
              },
            ],
          }),
        ),
      },
      { parent: this },
    );
    new aws.lambda.Permission(
      name,
      { action: "lambda:InvokeFunction", function: args.post.name, principal: "events.amazonaws.com", sourceArn: rule.arn },
      { parent: this },
    );
    new aws.cloudwatch.EventTarget(
      name,
      {
        rule: rule.name,
        eventBusName: args.bus.name,
        arn: args.post.arn,
        // a welcome is worth a few seconds, not a day
        retryPolicy: { maximumRetryAttempts: 2, maximumEventAgeInSeconds: 60 },
        deadLetterConfig: { arn: this.deadLetters.arn },
      },
      { parent: this },
    );
    this.registerOutputs({ deadLetters: this.deadLetters.url });
  }
}

export interface CleanupScheduleArgs {
  cleanup: aws.lambda.Function;
  scheduleExpression: string;
}

export class CleanupSchedule extends pulumi.ComponentResource {
  constructor(name: string, args: CleanupScheduleArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:CleanupSchedule", name, {}, opts);
    const caller = aws.getCallerIdentityOutput({}, { parent: this });
    const region = aws.getRegionOutput({}, { parent: this });
    const partition = aws.getPartitionOutput({}, { parent: this });
    const role = new aws.iam.Role(
      name,
      {
        // Only EventBridge Scheduler, and only for this account's default schedule group (the
        // confused-deputy guard AWS recommends for schedule execution roles).
        assumeRolePolicy: pulumi.all([caller.accountId, partition.partition, region.region]).apply(([account, p, r]) =>
          JSON.stringify({
            Version: "2012-10-17",
            Statement: [
              {
                Effect: "Allow",
                Principal: { Service: "scheduler.amazonaws.com" },
                Action: "sts:AssumeRole",
                Condition: {
                  StringEquals: {
                    "aws:SourceAccount": account,
                    "aws:SourceArn": `arn:${p}:scheduler:${r}:${account}:schedule-group/default`,
                  },
                },
              },
            ],
          }),
        ),
      },
      { parent: this },
    );
    new aws.iam.RolePolicy(
      name,
      {
        role: role.id,
        policy: args.cleanup.arn.apply((arn) =>
          JSON.stringify({
            Version: "2012-10-17",
            Statement: [{ Effect: "Allow", Action: "lambda:InvokeFunction", Resource: arn }],
          }),
        ),
      },
      { parent: this },
    );
    new aws.scheduler.Schedule(
      name,
      {
        scheduleExpression: args.scheduleExpression,
        flexibleTimeWindow: { mode: "OFF" },
        target: { arn: args.cleanup.arn, roleArn: role.arn, input: "{}", retryPolicy: { maximumRetryAttempts: 0 } },
      },
      { parent: this },
    );
    this.registerOutputs({});
  }
}
