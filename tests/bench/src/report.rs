//! The side-by-side table: one row per measurement, knode's value, upstream's, their ratio and the
//! floor where there is one; printed, and appended to a CSV (date, commit, machine, row, values).

use std::io::Write as _;
use std::path::Path;

use knode_harness::cluster::NodeKind;

/// One measurement of both implementations, taken in the same run.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub knode: f64,
    pub upstream: f64,
    /// A floor measured in the same run (what no node agent can beat), with its label.
    pub floor: Option<(&'static str, f64)>,
}

impl Row {
    pub fn new(name: impl Into<String>, unit: &'static str, knode: f64, upstream: f64) -> Row {
        Row {
            name: name.into(),
            unit,
            knode,
            upstream,
            floor: None,
        }
    }

    pub fn with_floor(mut self, label: &'static str, value: f64) -> Row {
        self.floor = Some((label, value));
        self
    }

    /// knode / upstream (below 1: knode is faster or smaller).
    pub fn ratio(&self) -> f64 {
        if self.upstream > 0.0 {
            self.knode / self.upstream
        } else {
            f64::NAN
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table as text (Markdown, so it pastes into the README as is).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| row | knode | upstream | knode / upstream | floor (same run) |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let floor = match r.floor {
            Some((label, v)) => format!("{} {} {} (knode {:.2}x)", label, fmt(v), r.unit, r.knode / v),
            None => String::new(),
        };
        let ratio = if r.ratio().is_finite() {
            format!("{:.2}", r.ratio())
        } else {
            "—".into()
        };
        out.push_str(&format!(
            "| {} | {} {u} | {} {u} | {ratio} | {floor} |\n",
            r.name,
            fmt(r.knode),
            fmt(r.upstream),
            u = r.unit,
        ));
    }
    out
}

/// Appends the rows to `csv` (header written when the file is new).
pub fn append_csv(
    csv: &Path,
    rows: &[Row],
    date: &str,
    commit: &str,
    machine: &str,
    mode: &str,
) -> std::io::Result<()> {
    let new = !csv.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(csv)?;
    if new {
        writeln!(
            f,
            "date,commit,machine,mode,row,unit,knode,upstream,ratio,floor_label,floor"
        )?;
    }
    for r in rows {
        let (fl, fv) = r
            .floor
            .map(|(l, v)| (l.to_string(), format!("{v:.3}")))
            .unwrap_or_default();
        writeln!(
            f,
            "{date},{commit},{machine},{mode},\"{}\",{},{:.3},{:.3},{:.3},{fl},{fv}",
            r.name,
            r.unit,
            r.knode,
            r.upstream,
            r.ratio()
        )?;
    }
    Ok(())
}

/// Values measured on each kind of node, made into one row.
#[derive(Default)]
pub struct Both {
    knode: Vec<f64>,
    upstream: Vec<f64>,
}

impl Both {
    pub fn push(&mut self, kind: NodeKind, v: f64) {
        match kind {
            NodeKind::Knode => self.knode.push(v),
            NodeKind::Upstream => self.upstream.push(v),
        }
    }
    pub fn extend(&mut self, kind: NodeKind, v: &[f64]) {
        for x in v {
            self.push(kind, *x);
        }
    }
    pub fn row(&mut self, name: String, unit: &'static str, p: f64) -> Row {
        Row::new(
            name,
            unit,
            percentile(&mut self.knode, p),
            percentile(&mut self.upstream, p),
        )
    }
}

/// The `p` quantile (0..=1) of `v` (sorted here), nearest rank.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_csv_carry_ratio_and_floor() {
        let rows = vec![
            Row::new("pod startup p50, burst of 30", "ms", 500.0, 1000.0).with_floor("ctr run -d", 400.0),
        ];
        let t = table(&rows);
        assert!(
            t.contains(
                "| pod startup p50, burst of 30 | 500 ms | 1000 ms | 0.50 | ctr run -d 400 ms (knode 1.25x) |"
            ),
            "{t}"
        );
        let dir = std::env::temp_dir().join(format!("knode-bench-csv-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        append_csv(&dir, &rows, "2026-12-07", "abc", "m", "quick").unwrap();
        append_csv(&dir, &rows, "2026-12-07", "abc", "m", "quick").unwrap();
        let text = std::fs::read_to_string(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines().nth(1).unwrap().contains(",0.500,ctr run -d,400.000"),
            "{text}"
        );
        let mut v = vec![3.0, 1.0, 2.0];
        assert_eq!(percentile(&mut v, 0.5), 2.0);
    }
}
