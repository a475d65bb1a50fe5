//! `serve --snapshot-config`: the shipped `snapshots.toml` applies to both hosted types, and a
//! file with a bad value stops the start with an error naming the file and the key.

use std::path::Path;
use std::process::Command;

use sample_app::ledger::{Stores, read_snapshot_config};

#[test]
fn the_shipped_snapshot_configuration_applies_to_both_hosted_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots.toml");
    let file = read_snapshot_config(&path).unwrap();
    assert_eq!(
        file.types.keys().map(String::as_str).collect::<Vec<_>>(),
        ["account", "customer"]
    );
    let stores = Stores::in_memory().with_snapshot_config(file).unwrap();
    assert!(stores.snapshot_config.is_some());
}

#[test]
fn serve_with_a_bad_snapshot_configuration_stops_with_an_error_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("snapshot-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[types.account]\nstrategy = { kind = \"every_n_events\", n = 0 }\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["serve", "--listen", "127.0.0.1:0", "--snapshot-config"])
        .arg(&path)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started with a bad file: {stderr}"
    );
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("types.account.strategy.n"), "{stderr}");
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[types.acount]\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sample-app"))
        .args(["serve", "--listen", "127.0.0.1:0", "--snapshot-config"])
        .arg(&unknown)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("\"acount\""), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
