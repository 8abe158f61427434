// The names the program shares with the Rust code, read from contract.json (which
// tests/lambda/contract.rs in the crate proves equal to the Rust constants).
//
// This module must not be called `contract.ts`: Pulumi's language host registers ts-node, which
// tries `.ts` only after Node's own `.js` and `.json`, so `import "./contract"` would load the
// JSON file and not the module (test/language-host.test.ts runs the program that way).
import contract from "./contract.json";

/** The authorizer (`authorize`): a stack with JWT auth has it, beside the chat functions. */
export const AUTHORIZER = contract.authorizer;
/** The chat functions, which every stack has: every function but the authorizer. */
export const FUNCTIONS: readonly string[] = contract.functions.filter((fn) => fn !== AUTHORIZER.function);
export const ROUTES: Readonly<Record<string, string>> = contract.routes;
/** The function of `$connect`. */
export const CONNECT_FUNCTION = contract.routes.$connect;
/** The functions of the routes that receive frames (every route but `$connect` and
 * `$disconnect`): each frame takes from its connection's and its user's frame budgets there. */
export const MESSAGE_FUNCTIONS: readonly string[] = Object.entries(contract.routes)
  .filter(([routeKey]) => routeKey !== "$connect" && routeKey !== "$disconnect")
  .map(([, fn]) => fn);
export const ROUTE_SELECTION = contract.routeSelectionExpression;
export const WELCOME = contract.welcomeEvent;
export const CLEANUP_FUNCTION = contract.cleanupFunction;
/** The worker that delivers sharded broadcasts, and how many jobs it takes per invocation. */
export const SHARDS = contract.shards;
export const TABLE = contract.table;
/** The rooms table: its key (partition and sort, both strings), its TTL attribute, the membership
 * shards a room's members are spread over; each connection's rooms are a string set
 * (`roomsAttribute`) on its record in the connections table. */
export const ROOMS_TABLE = contract.roomsTable;
export const ENV = contract.environment;
