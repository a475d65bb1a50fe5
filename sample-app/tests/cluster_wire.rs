//! In cluster mode a command travels to the node that owns its aggregate, and a rejection
//! travels back, as MessagePack (`register_remote` uses the framework's codec): every command
//! and every domain error of both aggregates must come out as it went in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aggregate_actors::codec;
use chrono::{TimeZone, Utc};
use sample_app::domain::{AccountCommand, AccountError, CustomerCommand, CustomerError, Dated};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
    let bytes = codec::encode(&value).expect("encodes");
    let back: T = codec::decode(&bytes).unwrap_or_else(|e| panic!("{value:?} decodes: {e}"));
    assert_eq!(back, value);
}

#[test]
fn every_command_survives_the_trip_to_the_owner_with_its_instant() {
    let at = Utc.with_ymd_and_hms(2025, 6, 1, 12, 30, 15).unwrap();
    for command in [
        json!({"type": "open", "owner": "cus-1"}),
        json!({"type": "deposit", "amount_cents": 500, "reference": "salary"}),
        json!({"type": "withdraw", "amount_cents": 100_000_000, "reference": "rent"}),
        json!({"type": "freeze", "reason": "fraud check"}),
        json!({"type": "unfreeze"}),
        json!({"type": "close"}),
        // Also what a review reminder stores (the same MessagePack codec).
        json!({"type": "review"}),
    ] {
        let command: AccountCommand = serde_json::from_value(command).unwrap();
        round_trip(Dated::at(command, at));
    }
    let address =
        json!({"line1": "1 Main St", "city": "Utrecht", "postal_code": "3511", "country": "NL"});
    for command in [
        json!({"type": "register", "name": "Ada", "email": "ada@example.com", "address": address}),
        json!({"type": "change_address", "address": address}),
        json!({"type": "link_account", "account_id": "acc-1"}),
        json!({"type": "verify"}),
    ] {
        let command: CustomerCommand = serde_json::from_value(command).unwrap();
        round_trip(Dated::at(command, at));
    }
}

#[test]
fn every_rejection_survives_the_trip_back() {
    for error in [
        AccountError::AlreadyOpen,
        AccountError::NotOpen,
        AccountError::Closed,
        AccountError::Frozen,
        AccountError::NotFrozen,
        AccountError::InsufficientFunds {
            balance_cents: 5,
            requested_cents: 7,
        },
        AccountError::BalanceLimit {
            balance_cents: 1,
            amount_cents: 2,
        },
        AccountError::BalanceNotZero { balance_cents: 3 },
    ] {
        round_trip(error);
    }
    for error in [
        CustomerError::AlreadyRegistered,
        CustomerError::NotRegistered,
        CustomerError::AlreadyLinked("acc-1".into()),
        CustomerError::TooManyAccounts,
        CustomerError::AlreadyVerified,
    ] {
        round_trip(error);
    }
}
