//! A plain aligned-text table: the first column left-aligned, the others right-aligned.

/// Rows of cells; a row with a single cell is a section heading.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
    header_rows: usize,
}

impl Table {
    /// A table with `header` as its first row.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            rows: vec![header.into_iter().map(Into::into).collect()],
            header_rows: 1,
        }
    }

    /// Adds another header row (call before adding data rows).
    pub fn header<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self.header_rows = self.rows.len();
        self
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// Renders the table, a rule under the header rows.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in self.rows.iter().filter(|r| r.len() > 1) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (n, row) in self.rows.iter().enumerate() {
            let mut line = String::new();
            if row.len() == 1 {
                line.push_str(&row[0]);
            } else {
                for (i, cell) in row.iter().enumerate() {
                    if i == 0 {
                        line.push_str(&format!("{cell:<w$}", w = widths[0]));
                    } else {
                        line.push_str(&format!("  {cell:>w$}", w = widths[i]));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if n + 1 == self.header_rows {
                let total: usize = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        out
    }
}

/// `1234567` as `1,234,567`.
pub fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in B, KiB or MiB.
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f >= KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB))
    } else if f >= KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{n} B")
    }
}

/// A duration in ms (µs below 0.1 ms, s from 1 s on).
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1_000.0;
    if ms < 0.1 {
        format!("{:.0} µs", ms * 1_000.0)
    } else if ms < 1_000.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.2} s", ms / 1_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1_000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
    }

    #[test]
    fn columns_align() {
        let mut table = Table::new(["", "a", "b"]);
        table
            .row(["x", "1", "22"])
            .row(["section"])
            .row(["longer", "333", "4"]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "          a   b");
        assert_eq!(lines[2], "x         1  22");
        assert_eq!(lines[3], "section");
        assert_eq!(lines[4], "longer  333   4");
    }
}
