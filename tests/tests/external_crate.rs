//! What a new user does: a fresh crate in a temporary directory outside the workspace whose
//! `Cargo.toml` is the README's Install section (its `toml` block, with the `../REPOSITORY`
//! path rewritten to this checkout), whose `src/main.rs` is the README's example (the block
//! under "Writing an aggregate") and whose second binary, `src/bin/postgres.rs`, is
//! `aggregate-actors/examples/postgres.rs`: the PostgreSQL stores wired into an executor.
//! Both are built with `cargo build --offline` (versions from a copy of the workspace's
//! `Cargo.lock`, crates from the local registry cache) and run with `cargo run --offline`; each
//! must exit 0 and print what the example prints. The PostgreSQL run gets a fresh database on
//! `DATABASE_URL` and is skipped like every PostgreSQL test without one (a failure in CI).
//!
//! A second fresh crate takes the Install section's commented `# in-memory stores only:` line
//! (`default-features = false`) instead: its dependency tree must hold no sqlx, and the
//! README's example must run on it as well.
//!
//! The build goes to `target/external-crate` of the workspace, so runs after the first are
//! incremental. The first (cold) one compiles the whole dependency tree once more (the fresh
//! crate's features and profile differ from the workspace's); it prints how long it took.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use aggregate_actors::event_stores::testing::fresh_database;

/// The placeholder of the README's path dependency, replaced by the checkout's root.
const REPOSITORY_PLACEHOLDER: &str = "../REPOSITORY";
/// The package name of the fresh crate (and of its `src/main.rs` binary).
const PACKAGE: &str = "fresh-readme-crate";
/// The package name of the fresh crate on the in-memory stores only.
const IN_MEMORY_ONLY_PACKAGE: &str = "fresh-readme-crate-in-memory-only";
/// How the Install section's comment with the in-memory-only dependency line starts.
const IN_MEMORY_ONLY_COMMENT: &str = "# in-memory stores only:";
/// Markers of the README's example (see `aggregate-actors/tests/readme_example.rs`).
const EXAMPLE_BEGIN: &str = "<!-- BEGIN aggregate-actors/examples/in_memory.rs";
const EXAMPLE_END: &str = "<!-- END aggregate-actors/examples/in_memory.rs -->";

/// What `in_memory.rs` (the README's example) prints, line by line.
const IN_MEMORY_OUTPUT: &[&str] = &[
    "withdrew 200: version 3, events [Withdrew { amount: 200 }]",
    "withdraw 1000 rejected: insufficient funds: 300 available, 1000 requested",
    "invoice-7: first at version 4 (duplicate: false), again at version 4 (duplicate: true)",
    "state: Balance { owner: Some(\"Alice\"), cents: 350 } at version 4",
    "commands: 4 succeeded, 1 rejected, 1 duplicate",
];

/// What `postgres.rs` prints, line by line (the first line starts with the account's id).
const POSTGRES_OUTPUT: &[&str] = &[
    ": Balance { owner: Some(\"Alice\"), cents: 1450 } at version 22",
    "snapshots after 22 events (every 5, keep 3): [20, 15, 10]",
    "snapshots after passivation: [22, 20, 15]",
    "another executor: Balance { owner: Some(\"Alice\"), cents: 1450 } at version 22, \
     from snapshot Some(22), 0 events replayed",
];

#[test]
fn a_fresh_crate_from_the_readme_runs_on_the_in_memory_and_the_postgres_stores() {
    let root = workspace_root();
    let readme = read(&root.join("README.md"));
    let manifest = install_manifest(&readme, &root, PACKAGE, Dependency::Default)
        .unwrap_or_else(|problem| panic!("README.md, Install section: {problem}"));
    let postgres_rs = read(&root.join("aggregate-actors/examples/postgres.rs"));

    let krate = FreshCrate::create(&root, PACKAGE, &manifest, &readme);
    krate.write("src/bin/postgres.rs", &postgres_rs);
    let target_dir = external_target_dir(&root);
    let cargo = |args: &[&str], envs: &[(&str, &str)]| krate.cargo(&target_dir, args, envs);

    // Both binaries, before anything runs: a PostgreSQL binary that does not compile fails
    // the test even where the PostgreSQL run is skipped.
    krate.build(&target_dir);

    let run = cargo(&["run", "--offline", "--bin", PACKAGE], &[]);
    assert_success("cargo run --offline (the README's example)", &run);
    assert_prints("the README's example", &run, IN_MEMORY_OUTPUT);

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(database) = runtime.block_on(fresh_database()) else {
        return;
    };
    let run = cargo(
        &["run", "--offline", "--bin", "postgres"],
        &[("DATABASE_URL", database.url())],
    );
    assert_success("cargo run --offline --bin postgres", &run);
    assert_prints("the postgres example", &run, POSTGRES_OUTPUT);
    assert!(
        !stdout(&run).contains("DATABASE_URL is not set"),
        "the postgres example did not get DATABASE_URL:\n{}",
        stdout(&run)
    );
    runtime.block_on(async move { drop(database) });
}

#[test]
fn a_fresh_crate_on_the_in_memory_stores_only_compiles_no_sqlx_and_runs() {
    let root = workspace_root();
    let readme = read(&root.join("README.md"));
    let manifest = install_manifest(
        &readme,
        &root,
        IN_MEMORY_ONLY_PACKAGE,
        Dependency::InMemoryOnly,
    )
    .unwrap_or_else(|problem| panic!("README.md, Install section: {problem}"));

    let krate = FreshCrate::create(&root, IN_MEMORY_ONLY_PACKAGE, &manifest, &readme);
    let target_dir = external_target_dir(&root);
    let tree = krate.cargo(
        &target_dir,
        &["tree", "--offline", "--edges", "normal", "--prefix", "none"],
        &[],
    );
    assert_success("cargo tree --offline", &tree);
    let sqlx: Vec<String> = stdout(&tree)
        .lines()
        .filter(|line| line.starts_with("sqlx"))
        .map(str::to_owned)
        .collect();
    assert!(
        sqlx.is_empty(),
        "with `default-features = false` the dependency tree still holds {sqlx:?}:\n{manifest}"
    );

    krate.build(&target_dir);
    let run = krate.cargo(
        &target_dir,
        &["run", "--offline", "--bin", IN_MEMORY_ONLY_PACKAGE],
        &[],
    );
    assert_success(
        "cargo run --offline (the README's example, in-memory only)",
        &run,
    );
    assert_prints(
        "the README's example (in-memory only)",
        &run,
        IN_MEMORY_OUTPUT,
    );
}

/// The checkout's root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("the tests crate lives in the workspace");
    root.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
}

/// `external-crate` in the workspace's target directory: `CARGO_TARGET_DIR` when set (relative
/// to the root when relative), else `<root>/target`. Both fresh crates build there, so each
/// run after the first is incremental and they share what they can.
fn external_target_dir(root: &Path) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    target.join("external-crate")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The README's Install section.
fn install_section(readme: &str) -> Result<&str, String> {
    let (_, section) = readme
        .split_once("\n## Install\n")
        .ok_or("no `## Install` heading")?;
    Ok(section
        .split_once("\n## ")
        .map_or(section, |(section, _)| section))
}

/// Which `aggregate-actors` line of the Install section the fresh crate uses.
#[derive(Clone, Copy, PartialEq)]
enum Dependency {
    /// The line itself (default features: PostgreSQL included).
    Default,
    /// The commented `# in-memory stores only:` line, uncommented in its place.
    InMemoryOnly,
}

/// The fresh crate's `Cargo.toml`: the Install section's `toml` block with the path of
/// `aggregate-actors` pointing at this checkout, a package name and version added under
/// `[package]`, and an empty `[workspace]` (the crate is its own workspace, wherever the
/// temporary directory is).
fn install_manifest(
    readme: &str,
    root: &Path,
    package: &str,
    dependency: Dependency,
) -> Result<String, String> {
    let section = install_section(readme)?;
    let (_, block) = section.split_once("```toml\n").ok_or("no ```toml block")?;
    let (block, _) = block
        .split_once("\n```")
        .ok_or("the ```toml block is not closed")?;

    let is_comment = |line: &str| line.trim_start().starts_with('#');
    let placeholder_path = format!("\"{REPOSITORY_PLACEHOLDER}/aggregate-actors\"");
    let is_path_dependency = |line: &str| {
        line.starts_with("aggregate-actors = {")
            && line.contains(&format!("path = {placeholder_path}"))
    };
    let default_line = block
        .lines()
        .find(|line| line.trim_start().starts_with("aggregate-actors"))
        .ok_or("no `aggregate-actors = …` line")?;
    if !is_path_dependency(default_line) {
        return Err(format!(
            "the `aggregate-actors` line is not a path dependency on {placeholder_path}: \
             {default_line:?}"
        ));
    }
    let in_memory_only_line = block
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(IN_MEMORY_ONLY_COMMENT))
        .map(str::trim)
        .ok_or_else(|| format!("no `{IN_MEMORY_ONLY_COMMENT} aggregate-actors = …` line"))?;
    if !is_path_dependency(in_memory_only_line)
        || !in_memory_only_line.contains("default-features = false")
    {
        return Err(format!(
            "the in-memory-only line is not a path dependency on {placeholder_path} with \
             `default-features = false`: {in_memory_only_line:?}"
        ));
    }
    if !block.lines().any(|line| line.trim() == "[package]") {
        return Err("no `[package]` table".into());
    }

    let root = root
        .to_str()
        .ok_or_else(|| format!("the checkout's path is not UTF-8: {}", root.display()))?;
    let mut manifest = String::new();
    for line in block.lines() {
        let line = if line == default_line && dependency == Dependency::InMemoryOnly {
            in_memory_only_line
        } else {
            line
        };
        let line = line.replace(REPOSITORY_PLACEHOLDER, root);
        if !is_comment(&line) && line.contains("REPOSITORY") {
            return Err(format!("a placeholder is left in {line:?}"));
        }
        manifest.push_str(&line);
        manifest.push('\n');
        if line.trim() == "[package]" {
            manifest.push_str(&format!("name = \"{package}\"\nversion = \"0.1.0\"\n"));
        }
    }
    manifest.push_str("\n[workspace]\n");
    Ok(manifest)
}

/// The code between the README's example markers, without its fence.
fn readme_example(readme: &str) -> Result<String, String> {
    let (_, after_begin) = readme.split_once(EXAMPLE_BEGIN).ok_or("no BEGIN marker")?;
    let (_, block) = after_begin
        .split_once('\n')
        .ok_or("nothing after the BEGIN marker")?;
    let (block, _) = block.split_once(EXAMPLE_END).ok_or("no END marker")?;
    block
        .strip_prefix("```rust\n")
        .and_then(|code| code.strip_suffix("```\n"))
        .map(str::to_owned)
        .ok_or_else(|| "between the markers, expected one ```rust fence".to_owned())
}

/// A crate in a fresh temporary directory outside the workspace, removed when dropped.
struct FreshCrate {
    dir: PathBuf,
}

impl FreshCrate {
    /// `<temp>/<package>-<pid>-<nanos>/<package>/` with `manifest` as its `Cargo.toml`, the
    /// README's example as `src/main.rs` and a copy of the workspace's `Cargo.lock` (its
    /// versions, so that `--offline` finds every crate in the local registry cache).
    fn create(root: &Path, package: &str, manifest: &str, readme: &str) -> FreshCrate {
        let main_rs = readme_example(readme)
            .unwrap_or_else(|problem| panic!("README.md, \"Writing an aggregate\": {problem}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let dir = std::env::temp_dir()
            .join(format!("{package}-{}-{nanos:09}", std::process::id()))
            .join(package);
        std::fs::create_dir_all(dir.join("src/bin"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let krate = FreshCrate {
            dir: dir.canonicalize().expect("the fresh crate's directory"),
        };
        assert!(
            !krate.dir.starts_with(root),
            "the temporary directory {} is inside the workspace {}: set TMPDIR elsewhere",
            krate.dir.display(),
            root.display()
        );
        krate.write("Cargo.toml", manifest);
        krate.write("src/main.rs", &main_rs);
        std::fs::copy(root.join("Cargo.lock"), krate.dir.join("Cargo.lock"))
            .expect("copying Cargo.lock");
        krate
    }

    /// `cargo build --offline --bins`, timed (the first run builds every dependency).
    fn build(&self, target_dir: &Path) {
        let started = Instant::now();
        let build = self.cargo(target_dir, &["build", "--offline", "--bins"], &[]);
        eprintln!(
            "external_crate: cargo build --offline of {} took {:.1} s (target dir {})",
            self.dir.display(),
            started.elapsed().as_secs_f64(),
            target_dir.display()
        );
        assert_success("cargo build --offline --bins", &build);
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.dir.join(relative);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// `cargo ARGS` in the crate's directory, its output captured.
    fn cargo(&self, target_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
        // The cargo that runs this test (same toolchain), else the one on PATH.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(cargo);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("CARGO_TARGET_DIR", target_dir)
            .env("CARGO_TERM_COLOR", "never")
            // Only to keep the target directory small; what runs is the same.
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("running cargo {args:?}: {e}"))
    }
}

impl Drop for FreshCrate {
    fn drop(&mut self) {
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The last lines of a text (cargo's stderr can be long).
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr (last lines)\n{}",
        output.status,
        tail(&stdout(output), 40),
        tail(&String::from_utf8_lossy(&output.stderr), 80)
    );
}

/// Every expected line is in the output, each in a line of its own (the line may carry a
/// prefix, such as the account id of the postgres example).
fn assert_prints(what: &str, output: &Output, expected: &[&str]) {
    let printed = stdout(output);
    for line in expected {
        assert!(
            printed.lines().any(|printed| printed.ends_with(line)),
            "{what} did not print {line:?}; it printed:\n{printed}"
        );
    }
}
