//! The TestData source as users would use it in their own tests, and flag-change
//! notifications computed from definitions.

use std::sync::mpsc;

use serde_json::json;
use vexil_schema::{Operator, Segment};
use vexil_sdk::{Client, Context, DataOrigin, ErrorKind, Reason, State, TestData, TestFlag};

use crate::harness::{PATIENCE, wait_change};

fn client(td: &TestData) -> Client {
    Client::builder("unused")
        .data_source(td.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn changes_are_visible_at_once_and_to_listeners() {
    let td = TestData::new();
    td.update(TestFlag::boolean("checkout").serve_value(false))
        .unwrap();
    let client = client(&td);
    client.wait_for_initialization(PATIENCE).await.unwrap();
    assert_eq!(client.status().state, State::Ready);
    assert_eq!(client.status().origin, Some(DataOrigin::TestData));
    let user = Context::builder("u1")
        .set("email", "a@corp.example")
        .build();
    assert!(!client.bool_variation("checkout", &user, true));

    let mut changes = client.flag_changes();
    let (tx, rx) = mpsc::channel();
    client.on_flag_change(move |c| {
        let _ = tx.send(c.keys.to_vec());
    });

    td.update(
        TestFlag::boolean("checkout")
            .serve_value(false)
            .rule_matching("email", Operator::EndsWith, vec![json!("@corp.example")], 0),
    )
    .unwrap();
    // Synchronous: no waiting needed to see it.
    assert!(client.bool_variation("checkout", &user, false));
    let d = client.bool_variation_detail("checkout", &user, false);
    assert_eq!(
        d.reason,
        Reason::RuleMatch {
            rule_index: 0,
            rule_id: "rule-0".into()
        }
    );
    wait_change(&mut changes, "checkout", PATIENCE).await;
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), ["checkout"]);

    td.delete("checkout").unwrap();
    assert_eq!(
        client
            .bool_variation_detail("checkout", &user, true)
            .error_kind(),
        Some(ErrorKind::FlagNotFound)
    );
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), ["checkout"]);
}

#[tokio::test]
async fn dependents_are_reported_and_unchanged_flags_are_not() {
    let td = TestData::new();
    td.update(TestFlag::boolean("parent")).unwrap();
    td.update(TestFlag::boolean("child").prerequisite("parent", 0))
        .unwrap();
    td.update(
        TestFlag::string("by-segment", ["in", "out"])
            .fallthrough(1)
            .rule_matching("", Operator::SegmentMatch, vec![json!("beta")], 0),
    )
    .unwrap();
    td.update(TestFlag::boolean("unrelated")).unwrap();
    let client = client(&td);
    let mut changes = client.flag_changes();

    td.update(TestFlag::boolean("parent").on(false)).unwrap();
    let c = wait_change(&mut changes, "parent", PATIENCE).await;
    assert_eq!(&*c.keys, ["child", "parent"]);
    assert!(!client.is_enabled("child", &Context::new("u")));

    let beta: Segment = serde_json::from_value(json!({"key": "beta", "included": ["u1"]})).unwrap();
    td.update_segment(beta);
    let c = wait_change(&mut changes, "by-segment", PATIENCE).await;
    assert_eq!(&*c.keys, ["by-segment"]);
    assert_eq!(
        client.string_variation("by-segment", &Context::new("u1"), "?"),
        "in"
    );

    // Re-sending an identical flag changes nothing.
    td.update(TestFlag::boolean("unrelated")).unwrap();
    td.update(TestFlag::boolean("unrelated").on(false)).unwrap();
    let c = wait_change(&mut changes, "unrelated", PATIENCE).await;
    assert_eq!(&*c.keys, ["unrelated"]);
    assert_eq!(
        c.version, 8,
        "the identical update at version 7 was not reported"
    );
}

#[test]
fn works_in_synchronous_programs_and_across_clients() {
    let td = TestData::new();
    td.update(TestFlag::number("limit", [10.0, 20.0])).unwrap();
    let a = client(&td);
    let b = client(&td);
    a.wait_for_initialization_blocking(PATIENCE).unwrap();
    let u = Context::new("u");
    assert_eq!(a.number_variation("limit", &u, 0.0), 10.0);
    assert_eq!(a.int_variation("limit", &u, 0), 10);
    td.update(TestFlag::number("limit", [10.0, 20.0]).serve(1))
        .unwrap();
    assert_eq!(a.int_variation("limit", &u, 0), 20);
    assert_eq!(b.int_variation("limit", &u, 0), 20);
    b.close();
    td.update(TestFlag::number("limit", [10.0, 20.0]).serve(0))
        .unwrap();
    assert_eq!(a.int_variation("limit", &u, 0), 10);
    assert_eq!(
        b.int_variation("limit", &u, 0),
        20,
        "a closed client keeps its flags"
    );
}

#[test]
fn a_panicking_listener_does_not_break_the_client() {
    let td = TestData::new();
    let client = client(&td);
    let (tx, rx) = mpsc::channel();
    client.on_flag_change(|_| panic!("listener bug"));
    let id = client.on_flag_change(move |c| {
        let _ = tx.send(c.version);
    });
    td.update(TestFlag::boolean("a")).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), 1);
    td.update(TestFlag::boolean("b")).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), 2);
    assert!(client.remove_flag_change_listener(id));
    assert!(client.is_enabled("b", &Context::new("u")));
}

#[test]
fn json_and_all_flags() {
    let td = TestData::new();
    td.update(TestFlag::json(
        "config",
        [json!({"retries": 3}), json!(null)],
    ))
    .unwrap();
    td.update(TestFlag::string("colour", ["red", "green"]).variation_name(0, "warm"))
        .unwrap();
    let client = client(&td);
    let u = Context::new("u");
    assert_eq!(
        client.json_variation("config", &u, json!({})),
        json!({"retries": 3})
    );
    let all = client.all_flags(&u);
    assert!(all.is_valid());
    assert_eq!(all.values().len(), 2);
    assert_eq!(all.value("colour"), Some(&json!("red")));
    assert_eq!(
        all.detail("colour").unwrap().variation_name.as_deref(),
        Some("warm")
    );
    let wire = serde_json::to_value(&all).unwrap();
    assert_eq!(wire["flags"]["config"]["value"], json!({"retries": 3}));
    assert_eq!(wire["valid"], json!(true));
}
