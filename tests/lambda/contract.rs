//! The names the Pulumi program uses (pulumi/contract.json), and the Dockerfile's list of
//! functions, are the names the Rust code uses.

use serde_json::Value;
use webchat::adapters::dynamodb::attributes;
use webchat::adapters::rooms;
use webchat::config::vars;
use webchat::lambda::Function;
use webchat::ports::MEMBERSHIP_SHARDS;
use webchat::protocol::{EVENT_SOURCE, RouteKey, WELCOME_DETAIL_TYPE};

fn contract() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pulumi/contract.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_pulumi_program_and_the_rust_code_agree_on_every_shared_name() {
    let contract = contract();
    let functions: Vec<&str> = contract["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let names: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(functions, names);
    let routes = contract["routes"].as_object().unwrap();
    assert_eq!(routes.len(), RouteKey::ALL.len());
    for route in RouteKey::ALL {
        assert_eq!(
            routes[route.as_str()],
            Function::serving(route).name(),
            "{}",
            route.as_str()
        );
    }
    assert_eq!(contract["routeSelectionExpression"], "$request.body.action");
    assert_eq!(contract["welcomeEvent"]["source"], EVENT_SOURCE);
    assert_eq!(contract["welcomeEvent"]["detailType"], WELCOME_DETAIL_TYPE);
    assert_eq!(contract["welcomeEvent"]["function"], "post");
    assert_eq!(contract["cleanupFunction"], "cleanup");
    assert_eq!(Function::Post.name(), "post");
    assert_eq!(Function::Cleanup.name(), "cleanup");
    for function in Function::ALL {
        if let Some(route) = function.route() {
            assert_eq!(Function::serving(route), function);
        }
    }
    assert_eq!(contract["table"]["key"], attributes::CONNECTION_ID);
    assert_eq!(contract["table"]["ttlAttribute"], attributes::EXPIRES_AT);
    let index = &contract["table"]["userIndex"];
    assert_eq!(index["name"], attributes::USER_INDEX);
    assert_eq!(index["key"], attributes::USER);
    assert_eq!(
        index["projected"],
        serde_json::json!([attributes::CONNECTED_AT, attributes::EXPIRES_AT])
    );
    let rooms = &contract["roomsTable"];
    assert_eq!(rooms["partitionKey"], rooms::attributes::PK);
    assert_eq!(rooms["sortKey"], rooms::attributes::SK);
    assert_eq!(rooms["ttlAttribute"], attributes::EXPIRES_AT);
    assert_eq!(rooms["membershipShards"], MEMBERSHIP_SHARDS);
    assert_eq!(rooms["roomsAttribute"], rooms::attributes::ROOMS);
    let environment = &contract["environment"];
    assert_eq!(environment["table"], vars::CONNECTIONS_TABLE);
    assert_eq!(environment["roomsTable"], vars::ROOMS_TABLE);
    assert_eq!(environment["historyDays"], vars::HISTORY_DAYS);
    assert_eq!(environment["presenceLimit"], vars::PRESENCE_LIMIT);
    assert_eq!(environment["eventBus"], vars::EVENT_BUS_NAME);
    assert_eq!(
        environment["managementEndpoint"],
        vars::WEBSOCKET_API_ENDPOINT
    );
    assert_eq!(environment["logLevel"], vars::LOG_LEVEL);
    assert_eq!(environment["fanoutConcurrency"], vars::FANOUT_CONCURRENCY);
    assert_eq!(environment["shardQueue"], vars::SHARD_QUEUE_URL);
    assert_eq!(environment["postRate"], vars::POST_RATE);
    assert_eq!(environment["scanPageSize"], vars::SCAN_PAGE_SIZE);
    assert_eq!(environment["metricsNamespace"], vars::METRICS_NAMESPACE);
    assert_eq!(environment["fanoutWorkers"], vars::FANOUT_WORKERS);
    assert_eq!(environment["shardAttempts"], vars::SHARD_ATTEMPTS);
    let authorizer = &contract["authorizer"];
    assert_eq!(authorizer["function"], Function::Authorize.name());
    assert_eq!(
        authorizer["subprotocol"],
        webchat::lambda::authorizer::SUBPROTOCOL
    );
    use webchat::lambda::authorizer::context;
    assert_eq!(
        authorizer["context"],
        serde_json::json!([context::USER, context::NAME, context::EXP])
    );
    assert_eq!(authorizer["environment"]["issuer"], vars::JWT_ISSUER);
    assert_eq!(authorizer["environment"]["audience"], vars::JWT_AUDIENCE);
    assert_eq!(contract["shards"]["function"], Function::Fanout.name());
    assert_eq!(contract["shards"]["batchSize"], 1);
}

#[test]
fn the_dockerfile_compiles_every_function_and_only_the_functions() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let line = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ARG FUNCTIONS="))
        .expect("the builder stage's ARG FUNCTIONS");
    let listed: Vec<&str> = line.trim_matches('"').split_whitespace().collect();
    let names: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(listed, names);
}

#[test]
fn the_stack_sets_every_variable_a_function_requires() {
    // The required variables are the ones the program sets for every function.
    let contract = contract();
    let set: Vec<&str> = contract["environment"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    for required in [
        vars::CONNECTIONS_TABLE,
        vars::ROOMS_TABLE,
        vars::EVENT_BUS_NAME,
        vars::WEBSOCKET_API_ENDPOINT,
    ] {
        assert!(set.contains(&required), "{required}");
    }
}
