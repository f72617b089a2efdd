//! `srcgrab diff OLD NEW`: what changed between two manifests, for people (text), for CI
//! comments (markdown) and for programs (json). Output is deterministic: the same two
//! manifests always print the same bytes.

use crate::cmd::report::{self, human_bytes, read_manifest, write_stdout, EntrySizes};
use crate::cmd::{bump_cost, stats_kit};
use crate::Status;
use serde_json::{json, Value};
use srcgrab_manifest::diff::{diff, ChangeTallies, DiffSummary, ManifestDiff, Tally};
use srcgrab_manifest::{Entry, Manifest, StorePath};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// The older manifest.
    old: PathBuf,
    /// The newer manifest.
    new: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Exit 1 when anything changed (entries, metadata or evaluation failures).
    #[arg(long)]
    fail_on_change: bool,
    /// A cache holding the entries (either side's): sizes come from its narinfos.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// A `srcgrab fetch --report` file: sizes of the entries it fetched (after `--cache`).
    #[arg(long = "report", value_name = "FILE")]
    fetch_report: Option<PathBuf>,
    /// A binary cache whose narinfos size the new manifest's outputs (repeatable).
    #[arg(long = "substituter", value_name = "URL")]
    substituters: Vec<String>,
    /// List at most this many entries per section (default: all; 200 for markdown, which
    /// must fit a CI comment). The counts always cover everything.
    #[arg(long, value_name = "N")]
    max_list: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let started = std::time::Instant::now();
    let (old, new) = rayon::join(|| read_manifest(&args.old), || read_manifest(&args.new));
    let (old, new) = (old?, new?);
    let parsed = started.elapsed();
    let d = diff(&old, &new);
    let diffed = started.elapsed() - parsed;
    if std::env::var_os("SRCGRAB_TIMING").is_some() {
        tell!(
            "srcgrab: timing: parse {:.3}s, diff {:.3}s ({} + {} entries)",
            parsed.as_secs_f64(),
            diffed.as_secs_f64(),
            old.entries.len(),
            new.entries.len()
        );
    }
    let mut sizes = match &args.cache {
        Some(dir) => EntrySizes::from_cache(dir, old.entries.iter().chain(&new.entries))?,
        None => EntrySizes::default(),
    };
    if let Some(report) = &args.fetch_report {
        sizes.fill_from(EntrySizes::from_fetch_report(report)?);
    }
    let size = |e: &Entry| sizes.file_size(e);
    let summary = d.summarize(&size);
    let cost = (!new.build.is_empty()).then(|| -> anyhow::Result<bump_cost::BumpCost> {
        let outputs = bump_cost::new_outputs(&old, &new);
        let mut output_sizes = match &args.cache {
            Some(dir) => report::sizes_in_cache(dir, &outputs),
            None => Default::default(),
        };
        if !args.substituters.is_empty() {
            let unsized_outputs: Vec<&StorePath> = outputs
                .iter()
                .copied()
                .filter(|p| !output_sizes.contains_key(*p))
                .collect();
            output_sizes.extend(stats_kit::from_substituters(
                &unsized_outputs,
                &args.substituters,
                Default::default(),
            )?);
        }
        Ok(bump_cost::compute(&old, &new, &sizes, &output_sizes))
    });
    let cost = cost.transpose()?;
    let view = View {
        old_path: args.old.display().to_string(),
        new_path: args.new.display().to_string(),
        old: &old,
        new: &new,
        diff: &d,
        summary: &summary,
        size: &size,
        sized: args.cache.is_some() || args.fetch_report.is_some(),
        max_list: args
            .max_list
            .or((args.format == Format::Markdown).then_some(200)),
    };
    let out = match args.format {
        Format::Text | Format::Markdown => {
            let mut s = match args.format {
                Format::Text => view.text(),
                _ => view.markdown(),
            };
            if let Some(cost) = &cost {
                s.push_str(&cost.text());
            }
            s
        }
        Format::Json => {
            let mut value = view.json();
            if let Some(cost) = &cost {
                value["bumpCost"] = cost.json();
            }
            let mut s = serde_json::to_string_pretty(&value)?;
            s.push('\n');
            s
        }
    };
    write_stdout(&out)?;
    Ok(if args.fail_on_change && d.has_changes() {
        Status::SomeFailed
    } else {
        Status::Ok
    })
}

/// Everything a renderer needs.
struct View<'a> {
    old_path: String,
    new_path: String,
    old: &'a Manifest,
    new: &'a Manifest,
    diff: &'a ManifestDiff<'a>,
    summary: &'a DiffSummary,
    size: &'a dyn Fn(&Entry) -> Option<u64>,
    /// Whether sizes were asked for (`--cache`), so size columns are worth showing.
    sized: bool,
    max_list: Option<usize>,
}

/// Picks one kind of change out of a slice's tallies.
type PickTally = fn(&ChangeTallies) -> Tally;

/// The four kinds of change, in the order every output lists them.
const CHANGES: [(&str, PickTally); 4] = [
    ("added", |t| t.added),
    ("removed", |t| t.removed),
    ("updated", |t| t.updated),
    ("metadata changed", |t| t.metadata_changed),
];

fn tally_size(t: Tally) -> String {
    match (t.bytes, t.unknown_sizes) {
        (_, 0) => human_bytes(t.bytes),
        (0, _) if t.unknown_sizes == t.count => String::new(),
        (b, unknown) => format!("{} (+{unknown} unknown)", human_bytes(b)),
    }
}

fn revision(m: &Manifest) -> String {
    match (&m.provenance.nixpkgs_rev, &m.provenance.nixpkgs) {
        (Some(rev), _) => rev.chars().take(12).collect(),
        (None, Some(path)) => path.clone(),
        (None, None) => "no provenance".into(),
    }
}

impl View<'_> {
    fn entry_size(&self, e: &Entry) -> String {
        (self.size)(e).map(human_bytes).unwrap_or_default()
    }

    /// The items of one section, cut at `max_list`, and how many were left out.
    fn listed<'b, T>(&self, items: &'b [T]) -> (&'b [T], usize) {
        let n = self.max_list.unwrap_or(usize::MAX).min(items.len());
        (&items[..n], items.len() - n)
    }

    fn sections(&self) -> Vec<(&'static str, Vec<[String; 4]>)> {
        let d = self.diff;
        let entry_row = |e: &Entry| {
            [
                e.name.clone(),
                e.kind.to_string(),
                e.systems.join(" "),
                self.entry_size(e),
            ]
        };
        vec![
            (
                "Updated",
                d.updated
                    .iter()
                    .map(|u| {
                        [
                            u.package.clone(),
                            format!("{} → {}", u.old_version, u.new_version),
                            u.new.kind.to_string(),
                            self.entry_size(u.new),
                        ]
                    })
                    .collect(),
            ),
            ("Added", d.added.iter().map(|e| entry_row(e)).collect()),
            ("Removed", d.removed.iter().map(|e| entry_row(e)).collect()),
            (
                "Metadata changed",
                d.metadata_changed
                    .iter()
                    .map(|m| {
                        let fields: Vec<&str> = m.fields.iter().map(|f| f.name()).collect();
                        [
                            m.new.name.clone(),
                            m.new.kind.to_string(),
                            fields.join(", "),
                            self.entry_size(m.new),
                        ]
                    })
                    .collect(),
            ),
            (
                "Evaluation failures added",
                d.failures_added.iter().map(|f| failure_row(f)).collect(),
            ),
            (
                "Evaluation failures removed",
                d.failures_removed.iter().map(|f| failure_row(f)).collect(),
            ),
        ]
    }

    fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({}) → {} ({})",
            self.old_path,
            revision(self.old),
            self.new_path,
            revision(self.new)
        );
        for (name, pick) in CHANGES {
            let t = pick(&self.summary.total);
            let line = format!("  {name:<17} {:>7}  {}", t.count, tally_size(t));
            let _ = writeln!(s, "{}", line.trim_end());
        }
        let _ = writeln!(s, "  {:<17} {:>7}", "unchanged", self.diff.unchanged);
        let breakdowns = [
            (
                "kind",
                self.summary
                    .by_kind
                    .iter()
                    .map(|(k, t)| (k.to_string(), *t))
                    .collect::<Vec<_>>(),
            ),
            (
                "system",
                self.summary
                    .by_system
                    .iter()
                    .map(|(k, t)| (k.clone(), *t))
                    .collect(),
            ),
        ];
        for (title, rows) in breakdowns {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(s, "\nby {title}:  added removed updated metadata");
            for (key, t) in rows {
                let _ = writeln!(
                    s,
                    "  {key:<18} {:>6} {:>7} {:>7} {:>8}",
                    t.added.count, t.removed.count, t.updated.count, t.metadata_changed.count
                );
            }
        }
        for (title, rows) in self.sections() {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(s, "\n{title} ({}):", rows.len());
            let (shown, hidden) = self.listed(&rows);
            for r in shown {
                let line = r
                    .iter()
                    .filter(|c| !c.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("  ");
                let _ = writeln!(s, "  {line}");
            }
            if hidden > 0 {
                let _ = writeln!(s, "  … and {hidden} more");
            }
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### srcgrab manifest diff\n");
        let _ = writeln!(
            s,
            "`{}` ({}) → `{}` ({})\n",
            self.old_path,
            revision(self.old),
            self.new_path,
            revision(self.new)
        );
        if self.sized {
            let _ = writeln!(s, "| change | entries | size |\n|---|---:|---:|");
        } else {
            let _ = writeln!(s, "| change | entries |\n|---|---:|");
        }
        for (name, pick) in CHANGES {
            let t = pick(&self.summary.total);
            let size = if self.sized {
                format!(" {} |", tally_size(t))
            } else {
                String::new()
            };
            let _ = writeln!(s, "| {name} | {} |{size}", t.count);
        }
        let _ = writeln!(
            s,
            "| unchanged | {} |{}",
            self.diff.unchanged,
            if self.sized { " |" } else { "" }
        );
        if !self.summary.by_system.is_empty() {
            let _ = writeln!(
                s,
                "\n| system | added | removed | updated | metadata changed |\n|---|---:|---:|---:|---:|"
            );
            for (system, t) in &self.summary.by_system {
                let _ = writeln!(
                    s,
                    "| {system} | {} | {} | {} | {} |",
                    t.added.count, t.removed.count, t.updated.count, t.metadata_changed.count
                );
            }
        }
        let headers = |title: &str| match title {
            "Updated" => ["package", "version", "kind", "size"],
            "Metadata changed" => ["name", "kind", "changed", "size"],
            t if t.starts_with("Evaluation") => ["attribute", "system", "error", "size"],
            _ => ["name", "kind", "systems", "size"],
        };
        for (title, rows) in self.sections() {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "\n<details><summary>{title} ({})</summary>\n",
                rows.len()
            );
            // The size column only when sizes are known (and never for failures).
            let columns = if self.sized && !title.starts_with("Evaluation") {
                4
            } else {
                3
            };
            let h = headers(title);
            let _ = writeln!(
                s,
                "| {} |\n|{}",
                h[..columns].join(" | "),
                "---|".repeat(columns)
            );
            let (shown, hidden) = self.listed(&rows);
            for r in shown {
                let cells: Vec<String> = r[..columns].iter().map(|c| markdown_cell(c)).collect();
                let _ = writeln!(s, "| {} |", cells.join(" | "));
            }
            if hidden > 0 {
                let _ = writeln!(
                    s,
                    "\n… and {hidden} more (see `srcgrab diff --format json`)."
                );
            }
            let _ = writeln!(s, "\n</details>");
        }
        if !self.diff.has_changes() {
            let _ = writeln!(s, "\nNo changes.");
        }
        s
    }

    fn json(&self) -> Value {
        let d = self.diff;
        let entry = |e: &Entry| {
            json!({
                "storePath": e.store_path,
                "name": e.name,
                "kind": e.kind,
                "systems": e.systems,
                "fileSize": (self.size)(e),
            })
        };
        json!({
            "old": { "path": self.old_path, "nixpkgsRev": self.old.provenance.nixpkgs_rev, "entries": self.old.entries.len() },
            "new": { "path": self.new_path, "nixpkgsRev": self.new.provenance.nixpkgs_rev, "entries": self.new.entries.len() },
            "changed": d.has_changes(),
            "unchanged": d.unchanged,
            "summary": self.summary,
            "added": d.added.iter().map(|e| entry(e)).collect::<Vec<_>>(),
            "removed": d.removed.iter().map(|e| entry(e)).collect::<Vec<_>>(),
            "updated": d.updated.iter().map(|u| json!({
                "package": u.package,
                "oldVersion": u.old_version,
                "newVersion": u.new_version,
                "old": entry(u.old),
                "new": entry(u.new),
            })).collect::<Vec<_>>(),
            "metadataChanged": d.metadata_changed.iter().map(|m| json!({
                "storePath": m.new.store_path,
                "fields": m.fields,
            })).collect::<Vec<_>>(),
            "failuresAdded": d.failures_added,
            "failuresRemoved": d.failures_removed,
        })
    }
}

/// A table cell: pipes escaped and newlines flattened so a row stays one row.
fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A table row for an evaluation failure (no size column).
fn failure_row(f: &srcgrab_manifest::Failure) -> [String; 4] {
    [
        f.attr.clone(),
        f.system.clone(),
        f.error.clone(),
        String::new(),
    ]
}
