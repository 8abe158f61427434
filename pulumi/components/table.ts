// The connections table: keyed by connectionId, TTL on expiresAt, on demand, point-in-time recovery.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { TABLE } from "../names";

export class ConnectionsTable extends pulumi.ComponentResource {
  public readonly table: aws.dynamodb.Table;

  constructor(name: string, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:ConnectionsTable", name, {}, opts);
    this.table = new aws.dynamodb.Table(
      name,
      {
        billingMode: "PAY_PER_REQUEST",
        hashKey: TABLE.key,
        attributes: [{ name: TABLE.key, type: "S" }],
        ttl: { attributeName: TABLE.ttlAttribute, enabled: true },
        pointInTimeRecovery: { enabled: true },
        serverSideEncryption: { enabled: true },
      },
      { parent: this },
    );
    this.registerOutputs({ table: this.table.name });
  }
}
