//! What a fetch run did: live, through [`Progress`], and at the end, as a [`Report`]
//! (the JSON of `srcgrab fetch --report`).

use serde::Serialize;
use srcgrab_manifest::{Entry, Kind};
pub use srcgrab_reporter::{Reporter, Silent};
use std::collections::BTreeMap;

/// What a fetch run (a manifest's entries, or a closure of binaries) reports as it goes,
/// through a [`Reporter`] ([`FetchReporter`]); the command line draws it.
#[derive(Debug, Clone, Copy)]
pub enum FetchEvent<'a> {
    /// The run starts with this many manifest entries.
    Start { entries: u64 },
    /// The download of one file started (all its tries and ranges are transfer `id`);
    /// `label` is the entry's name, `length` its size when known beforehand.
    DownloadStart {
        id: u64,
        label: &'a str,
        length: Option<u64>,
    },
    /// A server said how long transfer `id` is.
    DownloadLength { id: u64, length: u64 },
    /// Transfer `id` goes on in `ranges` parts at once.
    DownloadRanges { id: u64, ranges: usize },
    /// `bytes` more body bytes of transfer `id` arrived (in any of its ranges).
    DownloadBytes { id: u64, bytes: u64 },
    /// Transfer `id` ended, successfully or not.
    DownloadEnd { id: u64 },
    /// A step that counts no bytes and may take minutes started for an entry (a git
    /// checkout, a Nix build); `label` is the entry's name. Its ids are not transfer ids.
    StepStart { id: u64, step: Step, label: &'a str },
    /// Step `id` ended, successfully or not.
    StepEnd { id: u64 },
    /// Hosts marked down (skipped for now) changed to `count`.
    HostsDown { count: usize },
    /// An entry reached its final state.
    EntryDone(&'a EntryReport),
    /// A store path of a mirrored closure reached its final state.
    PathDone(&'a crate::binaries::PathReport),
}

/// A long step of a fetch, besides downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetching and checking out a git source.
    Git,
    /// `nix-store --realise` of the entry's derivation (`--builder nix`).
    Build,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Git => "git checkout",
            Step::Build => "Nix build",
        }
    }
}

/// The reporter of a fetch run: takes the events of any lifetime.
pub type FetchReporter = dyn for<'a> Reporter<FetchEvent<'a>>;

/// How a fetched entry was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// A NAR from an upstream binary cache.
    Substituter,
    /// A file downloaded and published as is (or wrapped in a NAR for executables).
    Url,
    /// A download unpacked into a tree (fetchzip semantics).
    Unpack,
    /// A NAR downloaded by URL and restored (`builtin:fetchurl` with `unpack`).
    Nar,
    /// A git checkout made natively (fetchgit semantics), through the shared mirrors.
    Git,
    /// Built by Nix's own builder (`--builder nix`).
    Builder,
}

impl How {
    pub fn name(self) -> &'static str {
        match self {
            How::Substituter => "substituter",
            How::Url => "url",
            How::Unpack => "unpack",
            How::Nar => "nar",
            How::Git => "git",
            How::Builder => "builder",
        }
    }
}

/// The final state of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// Published into the cache during this run.
    Fetched {
        how: How,
        /// The substituter or URL it came from.
        from: String,
    },
    /// Already in the cache; nothing done.
    Present,
    /// Every way to get it failed.
    Failed {
        /// A short category (`hash mismatch`, `not found`, `network`, ...), for the summary.
        reason: String,
        detail: String,
    },
    /// Only Nix's builder can produce it; `command` does so.
    NeedsBuilder { reason: String, command: String },
    /// Not wanted by this cache (e.g. a tree, for a mirror-only layout).
    Skipped { reason: String },
}

/// One substituter that had the entry but whose copy was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub substituter: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryReport {
    pub store_path: String,
    pub name: String,
    pub kind: Kind,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// URLs requested, in order, after rewriting (empty when a substituter served it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls_tried: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
    /// Body bytes received for this entry, failed attempts included.
    pub bytes_downloaded: u64,
    /// Bytes written into the cache (compressed NAR).
    pub bytes_written: u64,
}

impl EntryReport {
    pub fn new(entry: &Entry, outcome: Outcome) -> EntryReport {
        EntryReport {
            store_path: entry.store_path.clone(),
            name: entry.name.clone(),
            kind: entry.kind,
            outcome,
            urls_tried: Vec::new(),
            rejected: Vec::new(),
            bytes_downloaded: 0,
            bytes_written: 0,
        }
    }

    /// Whether the entry is now in the cache.
    pub fn is_done(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Fetched { .. } | Outcome::Present | Outcome::Skipped { .. }
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub entries: u64,
    pub present: u64,
    /// Fetched entries by how they were obtained.
    pub fetched: BTreeMap<String, u64>,
    /// Failed entries by reason.
    pub failed: BTreeMap<String, u64>,
    pub needs_builder: u64,
    pub skipped: u64,
    pub bytes_downloaded: u64,
    pub bytes_written: u64,
}

/// What one host (`host:port`) gave during the run, so a slow mirror shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    pub host: String,
    /// Body bytes received, failed tries included.
    pub bytes: u64,
    /// `bytes` over `busy_seconds`: the host's mean throughput while it was in use.
    pub bytes_per_second: u64,
    /// Seconds with at least one transfer from the host open.
    pub busy_seconds: f64,
    /// Requests sent (whole files, ranges, HEADs, narinfo look-ups); those a host marked
    /// down was spared are not counted.
    pub requests: u64,
    /// Tries that failed with a transient error and were retried (or moved on).
    pub retries: u64,
    /// The most transfers open to the host at once.
    pub peak_connections: u64,
    /// The most small requests (narinfo look-ups, HEADs) open to the host at once.
    pub peak_lookups: u64,
    /// When the host was marked down (not reached several times in a row), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<HostDown>,
}

/// A host that was marked down during the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostDown {
    /// Seconds after the run started that it was first marked down.
    pub since_seconds: f64,
    /// How often it was marked down (a probe after a cool-down that fails does not count).
    pub times: u64,
    /// Whether it was still down at the end of the run.
    pub still_down: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Why the run stopped before every entry was done (a full disk); the entries are then
    /// those finished before it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub summary: Summary,
    /// Per host downloaded from, by host.
    pub hosts: Vec<HostReport>,
    /// In manifest order.
    pub entries: Vec<EntryReport>,
    /// The manifest's `output` records (`enumerate --outputs`) and their closure, mirrored
    /// from the substituters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<crate::binaries::ClosureReport>,
}

impl Report {
    pub fn new(entries: Vec<EntryReport>) -> Report {
        let mut summary = Summary {
            entries: entries.len() as u64,
            ..Summary::default()
        };
        for e in &entries {
            summary.bytes_downloaded += e.bytes_downloaded;
            summary.bytes_written += e.bytes_written;
            match &e.outcome {
                Outcome::Present => summary.present += 1,
                Outcome::Fetched { how, .. } => {
                    *summary.fetched.entry(how.name().to_string()).or_default() += 1
                }
                Outcome::Failed { reason, .. } => {
                    *summary.failed.entry(reason.clone()).or_default() += 1
                }
                Outcome::NeedsBuilder { .. } => summary.needs_builder += 1,
                Outcome::Skipped { .. } => summary.skipped += 1,
            }
        }
        Report {
            stopped: None,
            summary,
            hosts: Vec::new(),
            entries,
            outputs: None,
        }
    }

    /// Whether the run went through and every entry is in the cache (exit status 0).
    pub fn all_done(&self) -> bool {
        self.stopped.is_none() && self.entries.iter().all(EntryReport::is_done)
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("report serialises");
        text.push('\n');
        text
    }
}
