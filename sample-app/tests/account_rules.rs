//! The rules of a ledger account, given/when/then with the framework's test kit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aggregate_actors::event_stores::{
    InMemoryEventStore, InMemorySnapshotStore, ReminderState, StreamId,
};
use aggregate_actors::testkit::{TestKit, assert_round_trip};
use aggregate_actors::{Aggregate, Clock, CommandId, Context, ManualClock, Services};
use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use sample_app::domain::account::{
    AccountStatus, Direction, MAX_BALANCE_CENTS, RECENT_TRANSACTIONS,
};
use sample_app::domain::amount::MAX_AMOUNT_CENTS;
use sample_app::domain::review::REVIEW_REMINDER;
use sample_app::domain::{
    Account, AccountCommand, AccountError, AccountEvent, Amount, BoundedText, Dated, ReviewPolicy,
};
use sample_app::ledger::LedgerAggregate;

fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0).unwrap() + Duration::days(n)
}

fn open() -> Dated<AccountCommand> {
    Dated::at(
        AccountCommand::Open {
            owner: BoundedText::new("cus-1").unwrap(),
        },
        day(0),
    )
}

fn deposit(cents: u64, on: i64) -> Dated<AccountCommand> {
    Dated::at(
        AccountCommand::Deposit {
            amount_cents: Amount::from_cents(cents).unwrap(),
            reference: BoundedText::new(format!("dep {cents}")).unwrap(),
        },
        day(on),
    )
}

fn withdraw(cents: u64, on: i64) -> Dated<AccountCommand> {
    Dated::at(
        AccountCommand::Withdraw {
            amount_cents: Amount::from_cents(cents).unwrap(),
            reference: BoundedText::new(format!("wd {cents}")).unwrap(),
        },
        day(on),
    )
}

fn plain(command: AccountCommand) -> Dated<AccountCommand> {
    Dated::at(command, day(1))
}

fn opened() -> AccountEvent {
    AccountEvent::Opened {
        owner: "cus-1".into(),
        at: day(0),
    }
}

fn deposited(cents: u64, on: i64) -> AccountEvent {
    AccountEvent::Deposited {
        amount_cents: cents,
        reference: format!("dep {cents}"),
        at: day(on),
    }
}

/// The stream version as stored: what proves a rejected command stored nothing.
async fn stored_version(kit: &TestKit<Account>) -> u64 {
    let stream = StreamId::new("account", kit.id()).unwrap();
    kit.executor()
        .event_store()
        .stream_version(&stream)
        .await
        .unwrap()
}

#[tokio::test]
async fn opening_records_the_owner_and_opening_twice_is_rejected() {
    let mut kit = TestKit::<Account>::new();
    kit.when(open()).await.then_events(&[opened()]);
    kit.when(open())
        .await
        .then_rejected(|e| *e == AccountError::AlreadyOpen);
    assert_eq!(stored_version(&kit).await, 1);
    let state = kit.state().await;
    assert_eq!(state.status, AccountStatus::Open);
    assert_eq!(state.owner, "cus-1");
}

#[tokio::test]
async fn nothing_but_open_is_accepted_before_opening_and_nothing_is_stored() {
    let mut kit = TestKit::<Account>::new();
    kit.when(deposit(100, 1))
        .await
        .then_rejected(|e| *e == AccountError::NotOpen);
    kit.when(plain(AccountCommand::Unfreeze {}))
        .await
        .then_rejected(|e| *e == AccountError::NotOpen);
    kit.when(plain(AccountCommand::Close {}))
        .await
        .then_rejected(|e| *e == AccountError::NotOpen);
    assert_eq!(stored_version(&kit).await, 0);
}

#[tokio::test]
async fn deposits_and_withdrawals_move_the_balance() {
    let mut kit = TestKit::<Account>::new();
    kit.given(vec![opened()]).await;
    kit.when(deposit(10_000, 1))
        .await
        .then_events(&[deposited(10_000, 1)]);
    kit.when(withdraw(2_500, 2))
        .await
        .then_events(&[AccountEvent::Withdrew {
            amount_cents: 2_500,
            reference: "wd 2500".into(),
            at: day(2),
        }]);
    let state = kit.state().await;
    assert_eq!(state.balance_cents, 7_500);
    assert_eq!(state.total_credited_cents, 10_000);
    assert_eq!(state.total_debited_cents, 2_500);
    assert_eq!(state.counts.deposits, 1);
    assert_eq!(state.counts.withdrawals, 1);
    assert_eq!(state.recent.back().unwrap().balance_after_cents, 7_500);
    assert_eq!(state.recent.back().unwrap().direction, Direction::Debit);
}

#[tokio::test]
async fn an_overdraft_is_rejected_and_stores_nothing() {
    let mut kit = TestKit::<Account>::new();
    kit.given(vec![opened(), deposited(1_000, 1)]).await;
    kit.when(withdraw(1_001, 2)).await.then_rejected(|e| {
        *e == AccountError::InsufficientFunds {
            balance_cents: 1_000,
            requested_cents: 1_001,
        }
    });
    assert_eq!(stored_version(&kit).await, 2);
    assert_eq!(kit.state().await.balance_cents, 1_000);
    // The whole balance may go: the limit is zero, not one cent above it.
    kit.when(withdraw(1_000, 2)).await;
    assert_eq!(kit.state().await.balance_cents, 0);
}

#[tokio::test]
async fn a_deposit_beyond_the_balance_limit_is_rejected() {
    let mut kit = TestKit::<Account>::new();
    let near_limit = MAX_BALANCE_CENTS - 10;
    kit.given(vec![opened(), deposited(near_limit, 1)]).await;
    kit.when(deposit(11, 2)).await.then_rejected(|e| {
        matches!(e, AccountError::BalanceLimit { balance_cents, amount_cents: 11 } if *balance_cents == near_limit)
    });
    kit.when(deposit(10, 2))
        .await
        .then_events(&[deposited(10, 2)]);
    assert_eq!(kit.state().await.balance_cents, MAX_BALANCE_CENTS);
}

#[tokio::test]
async fn a_frozen_account_takes_no_transactions_until_unfrozen() {
    let mut kit = TestKit::<Account>::new();
    kit.given(vec![opened(), deposited(5_000, 1)]).await;
    kit.when(plain(AccountCommand::Freeze {
        reason: BoundedText::new("fraud check").unwrap(),
    }))
    .await
    .then_events(&[AccountEvent::Frozen {
        reason: "fraud check".into(),
        at: day(1),
    }]);
    assert_eq!(
        kit.state().await.freeze_reason.as_deref(),
        Some("fraud check")
    );
    kit.when(deposit(1, 2))
        .await
        .then_rejected(|e| *e == AccountError::Frozen);
    kit.when(withdraw(1, 2))
        .await
        .then_rejected(|e| *e == AccountError::Frozen);
    kit.when(plain(AccountCommand::Freeze {
        reason: BoundedText::new("again").unwrap(),
    }))
    .await
    .then_rejected(|e| *e == AccountError::Frozen);
    kit.when(plain(AccountCommand::Close {}))
        .await
        .then_rejected(|e| *e == AccountError::Frozen);
    assert_eq!(stored_version(&kit).await, 3);

    kit.when(plain(AccountCommand::Unfreeze {}))
        .await
        .then_events(&[AccountEvent::Unfrozen { at: day(1) }]);
    kit.when(plain(AccountCommand::Unfreeze {}))
        .await
        .then_rejected(|e| *e == AccountError::NotFrozen);
    kit.when(withdraw(5_000, 3)).await;
    let state = kit.state().await;
    assert_eq!(state.status, AccountStatus::Open);
    assert_eq!(state.balance_cents, 0);
    assert_eq!((state.counts.freezes, state.counts.unfreezes), (1, 1));
}

fn frozen(on: i64) -> AccountEvent {
    AccountEvent::Frozen {
        reason: "fraud check".into(),
        at: day(on),
    }
}

fn freeze(on: i64) -> Dated<AccountCommand> {
    Dated::at(
        AccountCommand::Freeze {
            reason: BoundedText::new("fraud check").unwrap(),
        },
        day(on),
    )
}

fn review(on: i64) -> Dated<AccountCommand> {
    Dated::at(AccountCommand::Review {}, day(on))
}

#[tokio::test]
async fn a_review_is_requested_for_a_frozen_account_only_and_it_stays_frozen() {
    let mut kit = TestKit::<Account>::new();
    kit.when(review(1))
        .await
        .then_rejected(|e| *e == AccountError::NotOpen);
    kit.when(open()).await.then_events(&[opened()]);
    kit.when(review(1))
        .await
        .then_rejected(|e| *e == AccountError::NotFrozen);
    assert_eq!(stored_version(&kit).await, 1);

    kit.when(freeze(2)).await.then_events(&[frozen(2)]);
    kit.when(review(32))
        .await
        .then_events(&[AccountEvent::ReviewRequested {
            frozen_since: day(2),
            at: day(32),
        }]);
    let state = kit.state().await;
    assert_eq!(
        state.status,
        AccountStatus::Frozen,
        "a review does not unfreeze"
    );
    assert_eq!(state.frozen_since, Some(day(2)));
    assert_eq!(state.counts.reviews, 1);

    kit.when(plain(AccountCommand::Unfreeze {})).await;
    assert_eq!(kit.state().await.frozen_since, None);
    kit.when(review(40))
        .await
        .then_rejected(|e| *e == AccountError::NotFrozen);
    kit.when(plain(AccountCommand::Close {})).await;
    kit.when(review(41))
        .await
        .then_rejected(|e| *e == AccountError::Closed);
    assert_eq!(stored_version(&kit).await, 5);
}

#[test]
fn a_freeze_schedules_a_review_only_when_a_review_policy_is_registered() {
    let mut state = sample_app::domain::AccountState::default();
    Account::apply(&mut state, &opened());
    let clock = ManualClock::new(day(100));
    let mut services = Services::new();
    services.insert(ReviewPolicy::after(Duration::days(30)));
    let mut ctx = Context::<Account>::new("acc-1", CommandId::new(), 1, &clock, &services);
    let events = Account::decide(&state, &freeze(1), &mut ctx).unwrap();
    assert_eq!(events, [frozen(1)]);
    assert_eq!(ctx.scheduled_reminders(), [REVIEW_REMINDER]);

    let mut without = Context::<Account>::standalone("acc-1");
    Account::decide(&state, &freeze(1), &mut without).unwrap();
    assert!(without.scheduled_reminders().is_empty(), "reviews off");
    // A refused freeze schedules nothing either.
    Account::apply(&mut state, &frozen(1));
    let mut again = Context::<Account>::new("acc-1", CommandId::new(), 2, &clock, &services);
    assert_eq!(
        Account::decide(&state, &freeze(2), &mut again),
        Err(AccountError::Frozen)
    );
    assert!(again.scheduled_reminders().is_empty());
}

#[tokio::test]
async fn the_review_is_due_after_the_policy_from_the_clock_not_the_commands_instant_and_unfreeze_cancels_it()
 {
    let settings = Account::settings().service(ReviewPolicy::after(Duration::days(30)));
    let mut kit = TestKit::<Account>::with_stores(
        Arc::new(InMemoryEventStore::new()),
        Arc::new(InMemorySnapshotStore::new()),
        settings,
    );
    kit.when(open()).await;
    // The command says 2025-01-02 (a replayed or late command); the clock says now.
    kit.when(freeze(1)).await.then_events(&[frozen(1)]);
    let reminders = kit.executor().reminders::<Account>(kit.id()).await.unwrap();
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(reminders[0].name, REVIEW_REMINDER);
    assert_eq!(reminders[0].state, ReminderState::Scheduled);
    assert_eq!(reminders[0].period, None);
    assert_eq!(
        reminders[0].due_at,
        (kit.clock().now() + Duration::days(30)).trunc_subsecs(6)
    );

    kit.clock().advance(Duration::days(3));
    kit.when(plain(AccountCommand::Unfreeze {}))
        .await
        .then_events(&[AccountEvent::Unfrozen { at: day(1) }]);
    assert!(
        kit.executor()
            .reminders::<Account>(kit.id())
            .await
            .unwrap()
            .is_empty(),
        "the unfreeze cancelled the review"
    );

    // Frozen again: a new review, due 30 days from the new now.
    kit.when(freeze(5)).await;
    let again = kit.executor().reminders::<Account>(kit.id()).await.unwrap();
    assert_eq!(
        again[0].due_at,
        (kit.clock().now() + Duration::days(30)).trunc_subsecs(6)
    );
    assert_ne!(again[0].reminder_id, reminders[0].reminder_id);
}

#[tokio::test]
async fn closing_needs_a_zero_balance_and_a_closed_account_refuses_everything() {
    let mut kit = TestKit::<Account>::new();
    kit.given(vec![opened(), deposited(300, 1)]).await;
    kit.when(plain(AccountCommand::Close {}))
        .await
        .then_rejected(|e| *e == AccountError::BalanceNotZero { balance_cents: 300 });
    kit.when(withdraw(300, 2)).await;
    kit.when(plain(AccountCommand::Close {}))
        .await
        .then_events(&[AccountEvent::Closed { at: day(1) }]);
    let version = stored_version(&kit).await;
    for command in [
        deposit(1, 3),
        withdraw(1, 3),
        plain(AccountCommand::Close {}),
        plain(AccountCommand::Unfreeze {}),
        plain(AccountCommand::Freeze {
            reason: BoundedText::new("x").unwrap(),
        }),
    ] {
        kit.when(command)
            .await
            .then_rejected(|e| *e == AccountError::Closed);
    }
    kit.when(open())
        .await
        .then_rejected(|e| *e == AccountError::AlreadyOpen);
    assert_eq!(stored_version(&kit).await, version);
    assert_eq!(kit.state().await.status, AccountStatus::Closed);
}

#[tokio::test]
async fn the_state_keeps_the_last_fifty_transactions_and_totals_per_month() {
    let mut kit = TestKit::<Account>::new();
    let mut history = vec![opened()];
    // 120 deposits of 1..=120 cents, one every three days: about four months.
    history.extend((1..=120u64).map(|n| deposited(n, n as i64 * 3)));
    kit.given(history).await;
    let state = kit.state().await;
    assert_eq!(state.recent.len(), RECENT_TRANSACTIONS);
    assert_eq!(state.recent.front().unwrap().amount_cents, 71);
    assert_eq!(state.recent.back().unwrap().amount_cents, 120);
    assert_eq!(state.balance_cents, (1..=120u64).sum::<u64>());
    let months: Vec<&str> = state.monthly.keys().map(String::as_str).collect();
    assert_eq!(months.first(), Some(&"2025-01"));
    assert_eq!(months.last(), Some(&"2025-12"));
    let january = state.monthly["2025-01"];
    // Days 3, 6, …, 30 of 2025 are in January: deposits 1..=10.
    assert_eq!(january.transactions, 10);
    assert_eq!(january.credits_cents, (1..=10u64).sum::<u64>());
    assert_eq!(january.debits_cents, 0);
    let total: u64 = state.monthly.values().map(|m| m.credits_cents).sum();
    assert_eq!(total, state.total_credited_cents);
}

#[tokio::test]
async fn a_restarted_account_rebuilds_the_same_state() {
    let mut kit = TestKit::<Account>::new();
    kit.when(open()).await;
    for n in 1..=250u64 {
        kit.when(deposit(n * 10, n as i64)).await;
        if n % 3 == 0 {
            kit.when(withdraw(n, n as i64)).await;
        }
    }
    // Restart goes through shutdown (a passivation snapshot) and re-activation from it.
    let state = kit.restart().await;
    assert_eq!(state.counts.deposits, 250);
    assert_eq!(state.recent.len(), RECENT_TRANSACTIONS);
}

#[test]
fn every_event_and_a_filled_state_survive_the_storage_encoding() {
    for event in [
        opened(),
        deposited(123, 4),
        AccountEvent::Withdrew {
            amount_cents: 5,
            reference: "rent".into(),
            at: day(5),
        },
        AccountEvent::Frozen {
            reason: "fraud check".into(),
            at: day(6),
        },
        AccountEvent::Unfrozen { at: day(7) },
        AccountEvent::Closed { at: day(8) },
        AccountEvent::ReviewRequested {
            frozen_since: day(6),
            at: day(36),
        },
    ] {
        assert_round_trip(&event);
    }
    let mut state = sample_app::domain::AccountState::default();
    Account::apply(&mut state, &opened());
    for n in 1..=400u64 {
        Account::apply(&mut state, &deposited(n, n as i64));
    }
    Account::apply(
        &mut state,
        &AccountEvent::Frozen {
            reason: "check".into(),
            at: day(500),
        },
    );
    Account::apply(
        &mut state,
        &AccountEvent::ReviewRequested {
            frozen_since: day(500),
            at: day(530),
        },
    );
    assert_eq!(state.recent.len(), RECENT_TRANSACTIONS);
    assert!(state.monthly.len() > 12);
    assert_eq!(state.frozen_since, Some(day(500)));
    assert_eq!(state.counts.reviews, 1);
    assert_round_trip(&state);
}

#[test]
fn commands_parse_from_json_and_refuse_unknown_types_fields_and_bad_amounts() {
    let parse = serde_json::from_str::<AccountCommand>;
    assert_eq!(
        parse(r#"{"type":"deposit","amount_cents":500,"reference":"salary"}"#).unwrap(),
        AccountCommand::Deposit {
            amount_cents: Amount::from_cents(500).unwrap(),
            reference: BoundedText::new("salary").unwrap(),
        }
    );
    assert_eq!(
        parse(r#"{"type":"close"}"#).unwrap(),
        AccountCommand::Close {}
    );
    assert_eq!(
        parse(r#"{"type":"review"}"#).unwrap(),
        AccountCommand::Review {}
    );
    for bad in [
        r#"{"type":"review","now":true}"#,
        r#"{"type":"teleport"}"#,
        r#"{"type":"close","force":true}"#,
        r#"{"amount_cents":5,"reference":"x"}"#,
        r#"{"type":"deposit","amount_cents":5,"reference":"x","fee":1}"#,
        r#"{"type":"deposit","amount_cents":0,"reference":"x"}"#,
        r#"{"type":"deposit","amount_cents":-5,"reference":"x"}"#,
        r#"{"type":"deposit","amount_cents":1.5,"reference":"x"}"#,
        r#"{"type":"deposit","amount_cents":"5","reference":"x"}"#,
        r#"{"type":"withdraw","amount_cents":5}"#,
        r#"{"type":"withdraw","amount_cents":5,"reference":""}"#,
        r#"{"type":"open","owner":"   "}"#,
    ] {
        assert!(parse(bad).is_err(), "accepted {bad}");
    }
    let too_much = format!(
        r#"{{"type":"deposit","amount_cents":{},"reference":"x"}}"#,
        MAX_AMOUNT_CENTS + 1
    );
    assert!(parse(&too_much).is_err());
    let long_reference = format!(
        r#"{{"type":"deposit","amount_cents":1,"reference":"{}"}}"#,
        "r".repeat(65)
    );
    assert!(parse(&long_reference).is_err());
}
