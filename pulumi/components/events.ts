// The bus, the rule that sends welcome events to `post` (with a dead-letter queue), and the
// schedule that runs `cleanup`.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { WELCOME } from "../contract";

export class WelcomeBus extends pulumi.ComponentResource {
  public readonly bus: aws.cloudwatch.EventBus;
  public readonly deadLetters: aws.sqs.Queue;

  constructor(name: string, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:WelcomeBus", name, {}, opts);
    this.bus = new aws.cloudwatch.EventBus(name, {}, { parent: this });
    this.deadLetters = new aws.sqs.Queue(`${name}-dead-letters`, { messageRetentionSeconds: 14 * 24 * 3600 }, { parent: this });
    this.registerOutputs({ bus: this.bus.name });
  }

  /** Routes welcome events to `post`; events it cannot deliver go to the dead-letter queue. */
  public deliverTo(post: aws.lambda.Function): void {
    const rule = new aws.cloudwatch.EventRule(
      "welcome",
      {
        eventBusName: this.bus.name,
        eventPattern: JSON.stringify({ source: [WELCOME.source], "detail-type": [WELCOME.detailType] }),
      },
      { parent: this },
    );
    new aws.sqs.QueuePolicy(
      "welcome-dead-letters",
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
      "welcome",
      { action: "lambda:InvokeFunction", function: post.name, principal: "events.amazonaws.com", sourceArn: rule.arn },
      { parent: this },
    );
    new aws.cloudwatch.EventTarget(
      "welcome",
      {
        rule: rule.name,
        eventBusName: this.bus.name,
        arn: post.arn,
        // a welcome is worth a few seconds, not a day
        retryPolicy: { maximumRetryAttempts: 2, maximumEventAgeInSeconds: 60 },
        deadLetterConfig: { arn: this.deadLetters.arn },
      },
      { parent: this },
    );
  }
}

export interface CleanupScheduleArgs {
  cleanup: aws.lambda.Function;
  scheduleExpression: string;
}

export class CleanupSchedule extends pulumi.ComponentResource {
  constructor(name: string, args: CleanupScheduleArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:CleanupSchedule", name, {}, opts);
    const role = new aws.iam.Role(
      name,
      {
        assumeRolePolicy: JSON.stringify({
          Version: "2012-10-17",
          Statement: [{ Effect: "Allow", Principal: { Service: "scheduler.amazonaws.com" }, Action: "sts:AssumeRole" }],
        }),
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
