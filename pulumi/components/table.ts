// The connections table: keyed by connectionId, TTL on expiresAt, on demand, point-in-time
// recovery, and an index by user, so that a message to a person finds each of their connections
// with a Query (never a Scan, whose filter would still pay for every item read). The index is
// sparse: only signed-in connections have a userId.
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
        // every key attribute, the index's too, must be declared; nothing else may be
        attributes: [
          { name: TABLE.key, type: "S" },
          { name: TABLE.userIndex.key, type: "S" },
        ],
        globalSecondaryIndexes: [
          {
            name: TABLE.userIndex.name,
            // keySchemas, not hashKey, which @pulumi/aws 7 deprecates for indexes
            keySchemas: [{ attributeName: TABLE.userIndex.key, keyType: "HASH" }],
            // the connection id (the table's key) comes with every projection; chat also needs
            // expiresAt, to skip expired records, and connectedAt, to tell a newcomer from a gone
            // connection and prune exactly the record it read, without a read of the table
            projectionType: "INCLUDE",
            nonKeyAttributes: [...TABLE.userIndex.projected],
          },
        ],
        ttl: { attributeName: TABLE.ttlAttribute, enabled: true },
        pointInTimeRecovery: { enabled: true },
        serverSideEncryption: { enabled: true },
      },
      { parent: this },
    );
    this.registerOutputs({ table: this.table.name });
  }
}
