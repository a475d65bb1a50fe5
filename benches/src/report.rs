//! The report: tables printed as each scenario finishes and `REPORT.md` written at the end,
//! with a headline table (one row per scenario: our figure, the baseline's, the ratio).

use std::fmt::Write as _;

/// A table of strings with a header row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Optional caption printed above the table.
    pub caption: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows, each as wide as `headers`.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these headers.
    pub fn new(caption: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            caption: caption.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// GitHub-flavoured markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        if !self.caption.is_empty() {
            let _ = writeln!(out, "{}\n", self.caption);
        }
        let _ = writeln!(out, "| {} |", self.headers.join(" | "));
        let _ = writeln!(
            out,
            "|{}|",
            self.headers
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }

    /// Aligned plain text for the terminal.
    pub fn text(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = String::new();
        if !self.caption.is_empty() {
            let _ = writeln!(out, "{}", self.caption);
        }
        let _ = writeln!(out, "{}", line(&self.headers));
        let _ = writeln!(
            out,
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  ")
        );
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out
    }
}

/// One row of the headline table.
#[derive(Debug, Clone)]
pub struct Headline {
    /// The scenario, e.g. "1. Executor overhead (in-memory)".
    pub scenario: String,
    /// What is compared, e.g. "commands/s, 10 000 aggregates, 64 callers".
    pub metric: String,
    /// Our figure, formatted.
    pub ours: String,
    /// The baseline's name.
    pub baseline: String,
    /// The baseline's figure, formatted.
    pub baseline_figure: String,
    /// ours / baseline, formatted, with a word on which way is better.
    pub ratio: String,
}

/// What one scenario contributes to the report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Title, e.g. "1. Executor overhead, in-memory".
    pub title: String,
    /// What was measured and how, in a few sentences.
    pub method: String,
    /// The tables.
    pub tables: Vec<Table>,
    /// The one-line ratio to the baseline.
    pub ratio_line: String,
    /// Observations computed from the figures (why a figure is poor, what dominates).
    pub notes: Vec<String>,
    /// Files produced (plots), relative to the report.
    pub files: Vec<String>,
    /// The headline row, if the scenario produced one.
    pub headline: Option<Headline>,
}

impl Section {
    /// A section with a title and a description of the method.
    pub fn new(title: impl Into<String>, method: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            method: method.into(),
            ..Self::default()
        }
    }

    /// A section saying the scenario did not run, and why.
    pub fn skipped(title: impl Into<String>, why: impl Into<String>) -> Self {
        let why = why.into();
        Self {
            title: title.into(),
            method: format!("Not run: {why}"),
            ratio_line: format!("Ratio: not measured ({why})."),
            ..Self::default()
        }
    }

    /// Plain text for the terminal.
    pub fn text(&self) -> String {
        let mut out = format!("\n=== {} ===\n", self.title);
        for table in &self.tables {
            out.push_str(&table.text());
            out.push('\n');
        }
        let _ = writeln!(out, "{}", self.ratio_line);
        for note in &self.notes {
            let _ = writeln!(out, "  - {note}");
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n{}\n\n", self.title, self.method);
        for table in &self.tables {
            out.push_str(&table.markdown());
            out.push('\n');
        }
        for file in &self.files {
            let _ = writeln!(out, "![{file}]({file})\n");
        }
        let _ = writeln!(out, "**{}**\n", self.ratio_line);
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// Facts about the run printed at the top of the report.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// "quick" or "full".
    pub mode: String,
    /// When the run started (UTC).
    pub date: String,
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// CPU model name, if known.
    pub cpu_model: String,
    /// Total memory, if known.
    pub memory: String,
    /// The global allocator of the run.
    pub allocator: String,
    /// PostgreSQL version and durability settings, or why there was none.
    pub postgres: String,
    /// The durable server of scenarios 3 and 4 (version and settings), or why there was none.
    pub postgres_durable: String,
    /// Scenarios selected (`--only`), if not all.
    pub only: Option<String>,
    /// Wall time of the whole run.
    pub wall_time: String,
    /// The command line that produced the report.
    pub command: String,
}

/// Renders the whole report.
pub fn render(info: &RunInfo, sections: &[Section]) -> String {
    let mut out = String::from("# Benchmark report\n\n");
    out.push_str(
        "Generated by `benches/` (`make bench` / `make bench-quick`); do not edit by hand, every \
         run rewrites it. Every figure is compared with a baseline measured in the same run on \
         the same machine, so ratios are meaningful even on a shared, noisy machine whose \
         absolute figures are not.\n\n",
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| mode | {} |", info.mode);
    let _ = writeln!(out, "| date | {} |", info.date);
    let _ = writeln!(out, "| CPUs | {} ({}) |", info.cpus, info.cpu_model);
    let _ = writeln!(out, "| memory | {} |", info.memory);
    let _ = writeln!(out, "| allocator | {} |", info.allocator);
    let _ = writeln!(
        out,
        "| tracing | a subscriber writing warnings and errors, in every process, as a service has one |"
    );
    let _ = writeln!(out, "| PostgreSQL | {} |", info.postgres);
    let _ = writeln!(
        out,
        "| PostgreSQL, durable mode (scenarios 3, 4) | {} |",
        info.postgres_durable
    );
    let _ = writeln!(out, "| wall time | {} |", info.wall_time);
    let _ = writeln!(out, "| command | `{}` |", info.command);
    if let Some(only) = &info.only {
        let _ = writeln!(out, "| scenarios | only `{only}` (partial run) |");
    }
    out.push('\n');

    out.push_str("## Headline\n\n");
    let mut headline = Table::new(
        "",
        &[
            "scenario",
            "metric",
            "ours",
            "baseline",
            "baseline figure",
            "ratio",
        ],
    );
    for section in sections {
        match &section.headline {
            Some(h) => headline.row(vec![
                h.scenario.clone(),
                h.metric.clone(),
                h.ours.clone(),
                h.baseline.clone(),
                h.baseline_figure.clone(),
                h.ratio.clone(),
            ]),
            None => headline.row(vec![
                section.title.clone(),
                "not measured".to_owned(),
                "–".to_owned(),
                "–".to_owned(),
                "–".to_owned(),
                "–".to_owned(),
            ]),
        }
    }
    out.push_str(&headline.markdown());
    out.push_str(
        "\nRatios are ours ÷ baseline; the arrow says which way is better for us \
         (↑ higher is better, ↓ lower is better).\n\n",
    );
    out.push_str(
        "See [PROFILE.md](PROFILE.md) for where the time goes on the command path (a `perf` \
         profile) and why the poorer figures are what they are.\n\n",
    );
    for section in sections {
        out.push_str(&section.markdown());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown_and_text() {
        let mut table = Table::new("caption", &["a", "bb"]);
        table.row(vec!["1".into(), "2".into()]);
        assert!(
            table
                .markdown()
                .contains("| a | bb |\n|---|---|\n| 1 | 2 |")
        );
        assert!(table.text().contains("a  bb"));
    }

    #[test]
    fn the_report_has_a_headline_row_per_section() {
        let mut section = Section::new("1. x", "how");
        section.headline = Some(Headline {
            scenario: "1. x".into(),
            metric: "m".into(),
            ours: "2".into(),
            baseline: "b".into(),
            baseline_figure: "1".into(),
            ratio: "2× ↑".into(),
        });
        let skipped = Section::skipped("2. y", "no database");
        let text = render(&RunInfo::default(), &[section, skipped]);
        assert!(text.contains("| 1. x | m | 2 | b | 1 | 2× ↑ |"));
        assert!(text.contains("| 2. y | not measured |"));
    }
}
