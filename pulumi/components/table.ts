// The connections table: keyed by connectionId, TTL on expiresAt, on demand, point-in-time
// recovery, and an index by user, so that a message to a person finds each of their connections
// with a Query (never a Scan, whose filter would still pay for every item read). The index is
// sparse: only signed-in connections have a userId. Beside it, the rooms table.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ROOMS_TABLE, TABLE } from "../names";

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

/**
 * The rooms table: one table of string keys, partition `pk` and sort `sk`, holding a room's
 * members (one partition per membership shard, so that a room is read with a Query per shard,
 * never a Scan), its counters (the message seq and the member count) and its messages (by seq,
 * kept `webchat:historyDays`). Each item carries an expiry in `expiresAt`, which TTL deletes: a
 * member's is its connection's, a message's the end of its history. On demand, with
 * point-in-time recovery, as the connections table; no index.
 */
export class RoomsTable extends pulumi.ComponentResource {
  public readonly table: aws.dynamodb.Table;

  constructor(name: string, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:RoomsTable", name, {}, opts);
    this.table = new aws.dynamodb.Table(
      name,
      {
        billingMode: "PAY_PER_REQUEST",
        hashKey: ROOMS_TABLE.partitionKey,
        rangeKey: ROOMS_TABLE.sortKey,
        attributes: [
          { name: ROOMS_TABLE.partitionKey, type: "S" },
          { name: ROOMS_TABLE.sortKey, type: "S" },
        ],
        ttl: { attributeName: ROOMS_TABLE.ttlAttribute, enabled: true },
        pointInTimeRecovery: { enabled: true },
        serverSideEncryption: { enabled: true },
      },
      { parent: this },
    );
    this.registerOutputs({ table: this.table.name });
  }
}
