// The names the program shares with the Rust code, from contract.json (proved equal to the Rust
// constants by tests/contract.rs in the crate).
import contract from "./contract.json";

export type Handler = (typeof contract.functions)[number];
export const FUNCTIONS: readonly string[] = contract.functions;
export const ROUTES: Readonly<Record<string, string>> = contract.routes;
export const ROUTE_SELECTION = contract.routeSelectionExpression;
export const WELCOME = contract.welcomeEvent;
export const CLEANUP_FUNCTION = contract.cleanupFunction;
export const TABLE = contract.table;
export const ENV = contract.environment;

/** What each function may do: least privilege, by what its code calls. */
export interface Permissions {
  /** DynamoDB actions on the connections table. */
  dynamodb: string[];
  /** HTTP methods on `@connections/*` (POST: post, GET: describe, DELETE: delete). */
  connections: ("POST" | "GET" | "DELETE")[];
  /** events:PutEvents on the bus. */
  putEvents: boolean;
}

export const PERMISSIONS: Readonly<Record<string, Permissions>> = {
  connect: { dynamodb: ["dynamodb:PutItem"], connections: [], putEvents: true },
  disconnect: { dynamodb: ["dynamodb:DeleteItem"], connections: [], putEvents: false },
  default: { dynamodb: [], connections: ["POST"], putEvents: false },
  // the sender's name, the scan, and pruning of connections that answer 410
  broadcast: { dynamodb: ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:DeleteItem"], connections: ["POST"], putEvents: false },
  list: { dynamodb: ["dynamodb:Scan"], connections: ["POST"], putEvents: false },
  chat: { dynamodb: ["dynamodb:GetItem", "dynamodb:DeleteItem"], connections: ["POST"], putEvents: false },
  post: { dynamodb: [], connections: ["POST"], putEvents: false },
  cleanup: { dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem"], connections: ["GET"], putEvents: false },
};
