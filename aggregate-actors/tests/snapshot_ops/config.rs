//! Snapshot settings from a configuration file: TOML and JSON give the same settings, which
//! behave as configured in a running executor, and every bad value is a typed error naming
//! where it is, never a silent clamp.

use std::time::Duration;

use crate::common::{Ledger, LedgerCommand};
use aggregate_actors::AggregateSettings;
use aggregate_actors::codec::SnapshotCompression;
use aggregate_actors::config::{ConfigError, SnapshotConfigFile};
use aggregate_actors::testkit::TestKit;

const TOML: &str = r#"
[types.ledger]
snapshot_on_passivation = false
strategy = { kind = "any", of = [
    { kind = "every_n_events", n = 3 },
    { kind = "size", event_bytes = 100000 },
] }
retention = { keep_newest = 7, max_age = "2h" }
compression = { algorithm = "lz4", threshold_bytes = 16, max_deltas = 2 }
"#;

const JSON: &str = r#"{ "types": { "ledger": {
    "snapshot_on_passivation": false,
    "strategy": { "kind": "any", "of": [
        { "kind": "every_n_events", "n": 3 },
        { "kind": "size", "event_bytes": 100000 }
    ] },
    "retention": { "keep_newest": 7, "max_age": "2h" },
    "compression": { "algorithm": "lz4", "threshold_bytes": 16, "max_deltas": 2 }
} } }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_or_json_file_configures_the_strategy_retention_and_compression() {
    let from_toml = SnapshotConfigFile::from_toml(TOML).unwrap();
    let from_json = SnapshotConfigFile::from_json(JSON).unwrap();
    assert_eq!(from_toml, from_json);
    from_toml.check_types(&["ledger", "other"]).unwrap();

    let settings = from_toml.apply::<Ledger>(AggregateSettings::new()).unwrap();
    assert!(!settings.snapshot_on_passivation);
    assert_eq!(settings.retention.keep_newest, 7);
    assert_eq!(settings.retention.max_age, Some(Duration::from_secs(7_200)));
    assert_eq!(settings.compression.algorithm, SnapshotCompression::Lz4);
    assert_eq!(
        (
            settings.compression.threshold_bytes,
            settings.compression.max_deltas
        ),
        (16, 2)
    );

    // The strategy runs as configured: a snapshot every third event.
    let mut kit = TestKit::<Ledger>::with_settings(settings);
    for n in 0..7 {
        kit.when(LedgerCommand::Add(n)).await;
    }
    kit.reactivate().await;
    kit.then_activated_from(Some(6)).then_replayed(1);
}

#[test]
fn a_type_without_a_section_keeps_the_settings_from_code() {
    let file =
        SnapshotConfigFile::from_toml("[types.other]\nsnapshot_on_passivation = false\n").unwrap();
    let settings = file.apply::<Ledger>(AggregateSettings::new()).unwrap();
    assert!(settings.snapshot_on_passivation);
    assert_eq!(settings.retention.keep_newest, 3);
}

/// The error `toml` gives, applied to the ledger type.
fn error_of(toml: &str) -> ConfigError {
    let file = match SnapshotConfigFile::from_toml(toml) {
        Ok(file) => file,
        Err(error) => return error,
    };
    match file.apply::<Ledger>(AggregateSettings::new()) {
        Ok(_) => panic!("accepted: {toml}"),
        Err(error) => error,
    }
}

fn invalid_at(error: ConfigError) -> String {
    match error {
        ConfigError::Invalid { path, .. } => path,
        other => panic!("not an Invalid error: {other:?}"),
    }
}

#[test]
fn every_bad_value_is_an_error_naming_where_it_is() {
    let cases = [
        (
            r#"strategy = { kind = "every_n_events", n = 0 }"#,
            "types.ledger.strategy.n",
        ),
        (
            r#"strategy = { kind = "bounded", every = 10, min_gap = 5, max_gap = 2 }"#,
            "types.ledger.strategy.max_gap",
        ),
        (
            r#"strategy = { kind = "interval", every = "soon" }"#,
            "types.ledger.strategy.every",
        ),
        (r#"strategy = { kind = "size" }"#, "types.ledger.strategy"),
        (
            r#"strategy = { kind = "any", of = [] }"#,
            "types.ledger.strategy.of",
        ),
        (
            r#"strategy = { kind = "all", of = [{ kind = "every_n_events", n = 0 }] }"#,
            "types.ledger.strategy.of[0].n",
        ),
        (
            "retention = { keep_newest = 0 }",
            "types.ledger.retention.keep_newest",
        ),
        (
            r#"retention = { keep_newest = 2, max_age = "a while" }"#,
            "types.ledger.retention.max_age",
        ),
        (
            r#"compression = { algorithm = "brotli" }"#,
            "types.ledger.compression.algorithm",
        ),
        (
            r#"compression = { algorithm = "lz4", level = 3 }"#,
            "types.ledger.compression.level",
        ),
        (
            r#"compression = { algorithm = "zstd", level = 99 }"#,
            "types.ledger.compression.level",
        ),
    ];
    for (section, path) in cases {
        let error = error_of(&format!("[types.ledger]\n{section}\n"));
        assert!(!error.to_string().is_empty());
        assert_eq!(invalid_at(error), path, "{section}");
    }
}

#[test]
fn unknown_keys_kinds_and_types_are_refused() {
    assert!(matches!(
        error_of("[types.ledger]\nsnapshot_every = 5\n"),
        ConfigError::Parse { format: "TOML", .. }
    ));
    assert!(matches!(
        error_of("[types.ledger]\nstrategy = { kind = \"sometimes\" }\n"),
        ConfigError::Parse { .. }
    ));
    assert!(matches!(
        SnapshotConfigFile::from_json("{\"types\": {\"ledger\": {\"strategy\": 3}}}"),
        Err(ConfigError::Parse { format: "JSON", .. })
    ));
    let file = SnapshotConfigFile::from_toml("[types.ledgr]\n").unwrap();
    assert_eq!(
        file.check_types(&["ledger"]),
        Err(ConfigError::UnknownType("ledgr".to_owned()))
    );
}
