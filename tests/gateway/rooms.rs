//! Rooms on the wire against webchat-local: two people in two rooms hear only their rooms, a
//! reconnect catches up with `since`, presence comes and goes, and a connection closed by the
//! server leaves its rooms.

use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::spawn;

fn seqs(history: &Value) -> Vec<u64> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn two_people_in_two_rooms_hear_only_their_rooms() {
    let gateway = spawn().await;
    let (mut ada, ada_id) = gateway.join("?name=ada").await;
    let (mut bob, bob_id) = gateway.join("?name=bob").await;
    ada.send_json(json!({"action":"join","room":"red"})).await;
    assert_eq!(
        ada.next_of_type("joined").await,
        json!({"type":"joined","room":"red","seq":0,"presence":true})
    );
    bob.send_json(json!({"action":"join","room":"blue"})).await;
    bob.next_of_type("joined").await;
    ada.send_json(json!({"action":"broadcast","room":"red","message":"in red"}))
        .await;
    let said = ada.next_of_type("broadcast").await;
    assert_eq!(
        (&said["room"], &said["seq"], &said["from"], &said["name"]),
        (&json!("red"), &json!(1), &json!(ada_id), &json!("ada"))
    );
    bob.send_json(json!({"action":"broadcast","room":"blue","message":"in blue"}))
        .await;
    assert_eq!(bob.next_of_type("broadcast").await["room"], "blue");
    ada.expect_silence(Duration::from_millis(200)).await;
    // bob joins red too: ada sees him arrive, and both hear red
    bob.send_json(json!({"action":"join","room":"red"})).await;
    assert_eq!(bob.next_of_type("joined").await["seq"], 1);
    let arrived = ada.next_of_type("presence").await;
    assert_eq!(
        arrived,
        json!({"type":"presence","room":"red","event":"joined","connectionId":bob_id,"user":null,"name":"bob"})
    );
    bob.send_json(json!({"action":"broadcast","room":"red","message":"hi ada"}))
        .await;
    assert_eq!(ada.next_of_type("broadcast").await["seq"], 2);
    assert_eq!(bob.next_of_type("broadcast").await["seq"], 2);
    // ada is not in blue: refused, with a code
    ada.send_json(json!({"action":"history","room":"blue"}))
        .await;
    assert_eq!(ada.next_error_code().await, "not_a_member");
    ada.send_json(json!({"action":"list","room":"red"})).await;
    let listed = ada.next_of_type("connections").await;
    assert_eq!(listed["room"], "red");
    assert_eq!(listed["connections"].as_array().unwrap().len(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn a_reconnect_with_since_catches_up_on_what_was_missed() {
    let gateway = spawn().await;
    let (mut ada, _) = gateway.join("?name=ada").await;
    let (mut bob, bob_id) = gateway.join("?name=bob").await;
    for client in [&mut ada, &mut bob] {
        client.send_json(json!({"action":"join","room":"r"})).await;
        client.next_of_type("joined").await;
    }
    assert_eq!(ada.next_of_type("presence").await["event"], "joined");
    ada.send_json(json!({"action":"broadcast","room":"r","message":"m1"}))
        .await;
    let last_seen = bob.next_of_type("broadcast").await["seq"].as_u64().unwrap();
    // the server drops bob (as API Gateway does after 2 hours): his rooms are left
    let dropped = gateway
        .http("DELETE", &format!("/@connections/{bob_id}"), b"")
        .await;
    assert_eq!(dropped.status, 204);
    gateway.wait_until_gone(&bob_id).await;
    let left = ada.next_of_type("presence").await;
    assert_eq!(
        (&left["event"], &left["connectionId"]),
        (&json!("left"), &json!(bob_id))
    );
    for text in ["m2", "m3", "m4"] {
        ada.send_json(json!({"action":"broadcast","room":"r","message":text}))
            .await;
    }
    let (mut back, _) = gateway.join("?name=bob").await;
    back.send_json(json!({"action":"join","room":"r","since":last_seen}))
        .await;
    assert_eq!(back.next_of_type("joined").await["seq"], 4);
    let missed = back.next_of_type("history").await;
    assert_eq!(seqs(&missed), [2, 3, 4]);
    assert_eq!(missed["next"], Value::Null);
    assert_eq!(missed["messages"][2]["message"], "m4");
    ada.send_json(json!({"action":"broadcast","room":"r","message":"m5"}))
        .await;
    assert_eq!(back.next_of_type("broadcast").await["seq"], 5);
    // and history pages back to the start
    back.send_json(json!({"action":"history","room":"r","limit":2}))
        .await;
    let page = back.next_of_type("history").await;
    assert_eq!((seqs(&page), &page["next"]), (vec![4, 5], &json!(4)));
    back.send_json(json!({"action":"history","room":"r","limit":10,"before":4}))
        .await;
    let page = back.next_of_type("history").await;
    assert_eq!((seqs(&page), &page["next"]), (vec![1, 2, 3], &Value::Null));
    gateway.stop().await;
}

#[tokio::test]
async fn leave_and_the_room_limits_answer_with_codes_and_the_connection_keeps_serving() {
    let gateway = spawn().await;
    let (mut ada, _) = gateway.join("?name=ada").await;
    ada.send_json(json!({"action":"leave","room":"r"})).await;
    assert_eq!(ada.next_error_code().await, "not_a_member");
    ada.send_json(json!({"action":"join","room":"no spaces"}))
        .await;
    assert_eq!(ada.next_error_code().await, "invalid_field");
    for i in 0..20 {
        ada.send_json(json!({"action":"join","room":format!("r{i}")}))
            .await;
        ada.next_of_type("joined").await;
    }
    ada.send_json(json!({"action":"join","room":"r20"})).await;
    assert_eq!(ada.next_error_code().await, "too_many_rooms");
    ada.send_json(json!({"action":"leave","room":"r3"})).await;
    assert_eq!(
        ada.next_of_type("left").await,
        json!({"type":"left","room":"r3"})
    );
    ada.send_json(json!({"action":"join","room":"r20"})).await;
    assert_eq!(ada.next_of_type("joined").await["room"], "r20");
    gateway.stop().await;
}
