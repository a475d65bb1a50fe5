//! `sample-app backup export|import`: the ledger's events and snapshots to one backup file and
//! back, with a progress bar (see [`event_stores::backup`] for the format and the checks).
//!
//! Both work on PostgreSQL with `--database-url` (or `DATABASE_URL`), and on empty in-memory
//! stores without: an export from those writes an empty backup, and an import into them is a
//! full check of the file (every frame, every stream's versions, and the appends themselves)
//! whose result is discarded at exit: a verification, nothing more.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use event_stores::StoreError;
use event_stores::backup::{
    self, BackupError, BackupScope, ExportOptions, ImportOptions, Phase, Progress,
};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::ledger::{Collection, Stores};

/// `backup export` and `backup import`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write the events (and the snapshots of their streams) of the whole store, of one
    /// aggregate type, of some ids or of a time range to one compressed, checksummed file.
    Export(ExportArgs),
    /// Check a backup file completely, then import it (into an empty store, or one it
    /// continues); a damaged file or a conflicting stream stores nothing.
    Import(ImportArgs),
}

/// The options of `backup export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The file to write (written as FILE.partial, renamed once complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Only this aggregate type (`account`/`accounts`, `customer`/`customers`, or any stored
    /// type name).
    #[arg(long = "type", value_name = "TYPE")]
    pub aggregate_type: Option<String>,
    /// Only this aggregate id (repeatable; needs --type).
    #[arg(long = "id", value_name = "ID", requires = "aggregate_type")]
    pub ids: Vec<String>,
    /// Only events recorded at or after this time (RFC 3339, e.g. 2025-01-31T12:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339; exclusive, so `--to T` and a later
    /// `--from T` split the history without overlap).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// PostgreSQL URL; in-memory stores (an empty export) when absent.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// zstd compression level (1 fastest … 19 smallest).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
}

/// The options of `backup import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The backup file to read.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// PostgreSQL URL; without it the file is imported into in-memory stores that are
    /// discarded at exit, which only verifies it.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Why a backup command failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupCliError {
    /// The stores could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The export or the import failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The output file could not be created or renamed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The progress bar template is invalid (a bug).
    #[error("progress bar: {0}")]
    Progress(#[from] indicatif::style::TemplateError),
}

/// Runs a backup command; returns the report to print. `progress` draws a bar on stderr.
pub async fn run(command: BackupCommand, progress: bool) -> Result<String, BackupCliError> {
    match command {
        BackupCommand::Export(args) => export(args, progress).await,
        BackupCommand::Import(args) => import(args, progress).await,
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (2025-01-31T12:00:00Z): {e}"))
}

fn bar(progress: bool, len: Option<u64>, template: &str) -> Result<ProgressBar, BackupCliError> {
    let bar = match (progress, len) {
        (false, _) => return Ok(ProgressBar::hidden()),
        (true, Some(len)) => ProgressBar::new(len),
        (true, None) => ProgressBar::new_spinner(),
    };
    bar.set_style(ProgressStyle::with_template(template)?.progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

fn rate(count: u64, elapsed: Duration) -> String {
    format!(
        "{:.0} events/s",
        count as f64 / elapsed.as_secs_f64().max(1e-9)
    )
}

async fn export(args: ExportArgs, progress: bool) -> Result<String, BackupCliError> {
    let stores = Stores::open(args.database_url.as_deref(), 4).await?;
    let mut scope = match &args.aggregate_type {
        Some(name) => BackupScope::aggregate_type(match Collection::parse(name) {
            Some(collection) => collection.aggregate_type(),
            None => name.as_str(),
        }),
        None => BackupScope::all(),
    }
    .with_ids(args.ids.iter().cloned());
    if let Some(from) = args.from {
        scope = scope.recorded_from(from);
    }
    if let Some(to) = args.to {
        scope = scope.recorded_before(to);
    }
    scope.check()?;
    // A bar with a length only for a whole-store export: what a scope selects is not known
    // before reading it.
    let total = if scope == BackupScope::all() && progress {
        Some(stores.events.count_after(0).await?)
    } else {
        None
    };
    let template = match total {
        Some(_) => "export [{bar:40}] {pos}/{len} events, {msg}, {elapsed}",
        None => "export {spinner} {pos} events, {msg}, {elapsed}",
    };
    let bar = bar(progress, total, template)?;
    bar.set_message("0 B written");

    let partial = partial_path(&args.out);
    let file = std::fs::File::create(&partial).map_err(|source| BackupCliError::File {
        path: partial.clone(),
        source,
    })?;
    let exported = backup::export(
        &*stores.events,
        &*stores.snapshots,
        &scope,
        std::io::BufWriter::with_capacity(1 << 20, file),
        &ExportOptions::default().compression_level(args.level),
        |p: Progress| {
            bar.set_position(p.events);
            bar.set_message(format!("{} written", HumanBytes(p.bytes)));
        },
    )
    .await;
    bar.finish_and_clear();
    let exported = match exported {
        Ok(exported) => exported,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.into());
        }
    };
    std::fs::rename(&partial, &args.out).map_err(|source| BackupCliError::File {
        path: args.out.clone(),
        source,
    })?;
    Ok(format!(
        "exported {} events of {} streams and {} snapshots from {} to {}: {} bytes ({}) in \
         {:.2} s ({})\n",
        exported.events,
        exported.streams,
        exported.snapshots,
        stores.description,
        args.out.display(),
        exported.bytes,
        HumanBytes(exported.bytes),
        exported.elapsed.as_secs_f64(),
        rate(exported.events, exported.elapsed),
    ))
}

/// `FILE.partial`, next to `FILE`, so a cut-short export never carries the final name.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

async fn import(args: ImportArgs, progress: bool) -> Result<String, BackupCliError> {
    let stores = Stores::open(args.database_url.as_deref(), 8).await?;
    let size = std::fs::metadata(&args.input)
        .map_err(|source| BackupCliError::File {
            path: args.input.clone(),
            source,
        })?
        .len();
    let bar = bar(
        progress,
        Some(size),
        "{msg:>6} [{bar:40}] {bytes}/{total_bytes}, {elapsed}",
    )?;
    let imported = backup::import_file(
        &args.input,
        &*stores.events,
        &*stores.snapshots,
        &ImportOptions::default(),
        |p: Progress| {
            bar.set_message(match p.phase {
                Phase::Verify => "verify",
                Phase::Write | Phase::Export => "write",
            });
            bar.set_position(p.bytes);
        },
    )
    .await;
    bar.finish_and_clear();
    let imported = imported?;
    let summary = &imported.summary;
    let mut report = format!(
        "{}: {} events of {} streams and {} snapshots, exported {} by {}\n",
        args.input.display(),
        summary.events,
        summary.streams,
        summary.snapshots,
        summary.created_at.to_rfc3339(),
        summary.tool,
    );
    let total = imported.verify_time + imported.write_time;
    report.push_str(&format!(
        "imported into {}: {} events written, {} already present ({} of {} streams complete \
         already), {} snapshots saved; {} bytes verified in {:.2} s, written in {:.2} s ({})\n",
        stores.description,
        imported.events_written,
        imported.events_already_present,
        imported.streams_already_present,
        summary.streams,
        imported.snapshots_saved,
        summary.bytes,
        imported.verify_time.as_secs_f64(),
        imported.write_time.as_secs_f64(),
        rate(summary.events, total),
    ));
    if args.database_url.is_none() {
        report.push_str(
            "no --database-url: the import went into in-memory stores that are now discarded; \
             the file was only verified\n",
        );
    }
    Ok(report)
}
