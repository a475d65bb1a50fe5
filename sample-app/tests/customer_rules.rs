//! The rules of a customer, given/when/then with the framework's test kit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aggregate_actors::event_stores::StreamId;
use aggregate_actors::testkit::{TestKit, assert_round_trip};
use chrono::{DateTime, TimeZone, Utc};
use sample_app::domain::customer::{Address, AddressInput, Email, MAX_LINKED_ACCOUNTS};
use sample_app::domain::{
    BoundedText, Customer, CustomerCommand, CustomerError, CustomerEvent, CustomerState, Dated,
};

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn address_input(city: &str) -> AddressInput {
    serde_json::from_value(serde_json::json!({
        "line1": "1 Main St", "city": city, "postal_code": "1000", "country": "nl"
    }))
    .unwrap()
}

fn address(city: &str) -> Address {
    Address {
        line1: "1 Main St".into(),
        city: city.into(),
        postal_code: "1000".into(),
        country: "NL".into(),
    }
}

fn command(command: CustomerCommand) -> Dated<CustomerCommand> {
    Dated::at(command, at())
}

fn register() -> Dated<CustomerCommand> {
    command(CustomerCommand::Register {
        name: BoundedText::new("Ada").unwrap(),
        email: Email::new("ada@example.com").unwrap(),
        address: address_input("Utrecht"),
    })
}

fn registered() -> CustomerEvent {
    CustomerEvent::Registered {
        name: "Ada".into(),
        email: "ada@example.com".into(),
        address: address("Utrecht"),
        at: at(),
    }
}

fn link(account: &str) -> Dated<CustomerCommand> {
    command(CustomerCommand::LinkAccount {
        account_id: BoundedText::new(account).unwrap(),
    })
}

async fn stored_version(kit: &TestKit<Customer>) -> u64 {
    let stream = StreamId::new("customer", kit.id()).unwrap();
    kit.executor()
        .event_store()
        .stream_version(&stream)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_customer_registers_once_and_must_register_first() {
    let mut kit = TestKit::<Customer>::new();
    kit.when(link("acc-1"))
        .await
        .then_rejected(|e| *e == CustomerError::NotRegistered);
    kit.when(command(CustomerCommand::Verify {}))
        .await
        .then_rejected(|e| *e == CustomerError::NotRegistered);
    assert_eq!(stored_version(&kit).await, 0);
    kit.when(register()).await.then_events(&[registered()]);
    kit.when(register())
        .await
        .then_rejected(|e| *e == CustomerError::AlreadyRegistered);
    assert_eq!(stored_version(&kit).await, 1);
}

#[tokio::test]
async fn moving_voids_the_verification_and_the_same_address_changes_nothing() {
    let mut kit = TestKit::<Customer>::new();
    kit.given(vec![registered()]).await;
    kit.when(command(CustomerCommand::Verify {}))
        .await
        .then_events(&[CustomerEvent::Verified { at: at() }]);
    kit.when(command(CustomerCommand::Verify {}))
        .await
        .then_rejected(|e| *e == CustomerError::AlreadyVerified);
    // Same address: accepted, no event, still verified.
    kit.when(command(CustomerCommand::ChangeAddress {
        address: address_input("Utrecht"),
    }))
    .await
    .then_events(&[]);
    assert_eq!(stored_version(&kit).await, 2);
    assert!(kit.state().await.verified_at.is_some());

    kit.when(command(CustomerCommand::ChangeAddress {
        address: address_input("Delft"),
    }))
    .await
    .then_events(&[CustomerEvent::AddressChanged {
        address: address("Delft"),
        at: at(),
    }]);
    let state = kit.state().await;
    assert_eq!(state.address.city, "Delft");
    assert_eq!(state.address_changes, 1);
    assert_eq!(state.verified_at, None);
    kit.when(command(CustomerCommand::Verify {})).await;
    assert!(kit.state().await.verified_at.is_some());
}

#[tokio::test]
async fn accounts_link_once_each_and_at_most_ten() {
    let mut kit = TestKit::<Customer>::new();
    kit.given(vec![registered()]).await;
    kit.when(link("acc-0")).await;
    kit.when(link("acc-0"))
        .await
        .then_rejected(|e| *e == CustomerError::AlreadyLinked("acc-0".into()));
    for n in 1..MAX_LINKED_ACCOUNTS {
        kit.when(link(&format!("acc-{n}"))).await;
    }
    let version = stored_version(&kit).await;
    kit.when(link("acc-one-too-many"))
        .await
        .then_rejected(|e| *e == CustomerError::TooManyAccounts);
    assert_eq!(stored_version(&kit).await, version);
    let state = kit.restart().await;
    assert_eq!(state.accounts.len(), MAX_LINKED_ACCOUNTS);
}

#[test]
fn every_event_and_a_filled_state_survive_the_storage_encoding() {
    let events = [
        registered(),
        CustomerEvent::AddressChanged {
            address: address("Delft"),
            at: at(),
        },
        CustomerEvent::AccountLinked {
            account_id: "acc-1".into(),
            at: at(),
        },
        CustomerEvent::Verified { at: at() },
    ];
    let mut state = CustomerState::default();
    for event in &events {
        assert_round_trip(event);
        <Customer as aggregate_actors::Aggregate>::apply(&mut state, event);
    }
    assert!(state.registered && state.verified_at.is_some() && !state.accounts.is_empty());
    assert_round_trip(&state);
}

#[test]
fn commands_parse_from_json_and_refuse_bad_values() {
    let parse = serde_json::from_str::<CustomerCommand>;
    assert_eq!(
        parse(r#"{"type":"verify"}"#).unwrap(),
        CustomerCommand::Verify {}
    );
    assert!(matches!(
        parse(r#"{"type":"link_account","account_id":"acc-9"}"#).unwrap(),
        CustomerCommand::LinkAccount { .. }
    ));
    for bad in [
        r#"{"type":"verify","by":"me"}"#,
        r#"{"type":"register","name":"A","email":"not-an-email","address":{"line1":"x","city":"y","postal_code":"1","country":"NL"}}"#,
        r#"{"type":"register","name":"A","email":"a@b.co","address":{"line1":"x","city":"y","postal_code":"1","country":"NLD"}}"#,
        r#"{"type":"change_address","address":{"line1":"x","city":"y","postal_code":"1","country":"NL","planet":"earth"}}"#,
        r#"{"type":"link_account","account_id":""}"#,
    ] {
        assert!(parse(bad).is_err(), "accepted {bad}");
    }
}
