//! The `.narinfo` files and `nix-cache-info` of a Nix binary cache: parsing, rendering,
//! and the fingerprint that `Sig:` lines sign.
//!
//! Parsing is as tolerant as Nix's where that keeps newer caches readable (unknown keys are
//! ignored) and strict where a lax reading would be a hole: a field given twice is refused
//! (as harmonia does; only `Sig:` repeats), and `URL:` must be a relative path that stays
//! inside the cache ([`NarUrl`]), so no narinfo can make a reader open a file elsewhere.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::content_address::{ContentAddress, ContentAddressError};
use crate::hash::Hash;
use crate::store_path::StorePath;

/// A narinfo or `nix-cache-info` that cannot be read, and on which line (1-based).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("narinfo line {line}: {reason}")]
pub struct NarInfoError {
    pub line: usize,
    pub reason: String,
}

fn bad(line: usize, reason: impl Into<String>) -> NarInfoError {
    NarInfoError {
        line,
        reason: reason.into(),
    }
}

/// How a NAR file is compressed, as the narinfo `Compression:` field names it. Nix reads a
/// missing or empty field as `bzip2`, its old default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    Xz,
    #[default]
    Zstd,
    Bzip2,
}

impl Compression {
    /// The narinfo `Compression:` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// What NAR file names end with after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
            Compression::Bzip2 => ".bz2",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "xz" => Ok(Compression::Xz),
            "zstd" => Ok(Compression::Zstd),
            "bzip2" => Ok(Compression::Bzip2),
            other => Err(format!(
                "unsupported compression '{other}' (none, xz, zstd, bzip2)"
            )),
        }
    }
}

/// The `URL:` of a NAR file: a relative path of plain components (no `/` at the start, no
/// `.` or `..`, no empty component, no scheme), so joined to the cache root it always names
/// a file inside the cache.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarUrl(String);

impl NarUrl {
    pub fn new(url: &str) -> Result<NarUrl, String> {
        let plain = !url.is_empty()
            && url
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\0', '\\']))
            && !url.contains(':');
        if plain {
            Ok(NarUrl(url.to_string()))
        } else {
            Err(format!(
                "URL '{url}' is not a relative path inside the cache"
            ))
        }
    }

    /// The NAR file's path relative to the cache root.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for NarUrl {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl fmt::Display for NarUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `<hash>.narinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Relative to the cache root, e.g. `nar/<filehash>.nar.zst`.
    pub url: NarUrl,
    pub compression: Compression,
    pub file_hash: Option<Hash>,
    pub file_size: Option<u64>,
    pub nar_hash: Hash,
    pub nar_size: u64,
    /// Empty for sources.
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// `keyname:base64sig`, one per `Sig:` line.
    pub sigs: Vec<String>,
    pub ca: Option<ContentAddress>,
}

/// Splits `Key: value` lines; yields (line number, key, value).
fn fields(text: &str) -> impl Iterator<Item = Result<(usize, &str, &str), NarInfoError>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let line_number = index + 1;
            line.split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|key| (key, "")))
                .map(|(key, value)| (line_number, key, value))
                .ok_or_else(|| bad(line_number, format!("expected 'Key: value', got '{line}'")))
        })
}

fn parse_number(line: usize, key: &str, value: &str) -> Result<u64, NarInfoError> {
    value
        .parse()
        .map_err(|_| bad(line, format!("{key} is not a number: '{value}'")))
}

fn parse_hash(line: usize, key: &str, value: &str) -> Result<Hash, NarInfoError> {
    Hash::parse(value, None).map_err(|e| bad(line, format!("{key}: {e}")))
}

fn parse_base_name(line: usize, key: &str, value: &str) -> Result<StorePath, NarInfoError> {
    StorePath::from_base_name(value).map_err(|e| bad(line, format!("{key}: {e}")))
}

/// Sets a field that may appear once.
fn once<T>(slot: &mut Option<T>, line: usize, key: &str, value: T) -> Result<(), NarInfoError> {
    if slot.is_some() {
        return Err(bad(line, format!("{key} given twice")));
    }
    *slot = Some(value);
    Ok(())
}

impl NarInfo {
    pub fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;
        for field in fields(text) {
            let (line, key, value) = field?;
            match key {
                "StorePath" => {
                    let path = StorePath::parse(value).map_err(|e| bad(line, e.to_string()))?;
                    once(&mut store_path, line, key, path)?
                }
                "URL" => once(
                    &mut url,
                    line,
                    key,
                    NarUrl::new(value).map_err(|e| bad(line, e))?,
                )?,
                "Compression" => {
                    let parsed = match value {
                        "" => Compression::Bzip2,
                        _ => value.parse().map_err(|e: String| bad(line, e))?,
                    };
                    once(&mut compression, line, key, parsed)?
                }
                "FileHash" => once(&mut file_hash, line, key, parse_hash(line, key, value)?)?,
                "FileSize" => once(&mut file_size, line, key, parse_number(line, key, value)?)?,
                "NarHash" => once(&mut nar_hash, line, key, parse_hash(line, key, value)?)?,
                "NarSize" => once(&mut nar_size, line, key, parse_number(line, key, value)?)?,
                "References" => {
                    let paths = value
                        .split_whitespace()
                        .map(|r| parse_base_name(line, key, r))
                        .collect::<Result<Vec<_>, _>>()?;
                    once(&mut references, line, key, paths)?
                }
                "Deriver" => {
                    let path = match value {
                        "" | "unknown-deriver" => None,
                        _ => Some(parse_base_name(line, key, value)?),
                    };
                    once(&mut deriver, line, key, path)?
                }
                "Sig" => sigs.push(value.to_string()),
                "CA" => {
                    let parsed = match value {
                        "" => None,
                        _ => Some(
                            value
                                .parse()
                                .map_err(|e: ContentAddressError| bad(line, e.to_string()))?,
                        ),
                    };
                    once(&mut ca, line, key, parsed)?
                }
                _ => {}
            }
        }
        let last = text.lines().count().max(1);
        let missing = |key: &str| bad(last, format!("missing {key}"));
        Ok(NarInfo {
            store_path: store_path.ok_or_else(|| missing("StorePath"))?,
            url: url.ok_or_else(|| missing("URL"))?,
            compression: compression.unwrap_or(Compression::Bzip2),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or_else(|| missing("NarHash"))?,
            nar_size: nar_size.ok_or_else(|| missing("NarSize"))?,
            references: references.unwrap_or_default(),
            deriver: deriver.flatten(),
            sigs,
            ca: ca.flatten(),
        })
    }

    /// The text Nix writes, field order included.
    pub fn render(&self) -> String {
        let mut out = format!(
            "StorePath: {}\nURL: {}\nCompression: {}\n",
            self.store_path, self.url, self.compression
        );
        if let Some(hash) = &self.file_hash {
            out += &format!("FileHash: {}\n", hash.to_nix32_prefixed());
        }
        if let Some(size) = self.file_size {
            out += &format!("FileSize: {size}\n");
        }
        let references: Vec<String> = self.references.iter().map(StorePath::base_name).collect();
        out += &format!(
            "NarHash: {}\nNarSize: {}\nReferences: {}\n",
            self.nar_hash.to_nix32_prefixed(),
            self.nar_size,
            references.join(" ")
        );
        if let Some(deriver) = &self.deriver {
            out += &format!("Deriver: {}\n", deriver.base_name());
        }
        for sig in &self.sigs {
            out += &format!("Sig: {sig}\n");
        }
        if let Some(ca) = &self.ca {
            out += &format!("CA: {ca}\n");
        }
        out
    }

    /// What a `Sig:` signs: `1;<store path>;<nar hash>;<nar size>;<full reference paths>`.
    pub fn fingerprint(&self) -> String {
        let references: Vec<String> = self
            .references
            .iter()
            .map(StorePath::to_path_string)
            .collect();
        format!(
            "1;{};{};{};{}",
            self.store_path,
            self.nar_hash.to_nix32_prefixed(),
            self.nar_size,
            references.join(",")
        )
    }
}

/// The `nix-cache-info` at a cache's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    pub store_dir: String,
    pub want_mass_query: bool,
    pub priority: Option<u32>,
}

impl CacheInfo {
    pub fn parse(text: &str) -> Result<CacheInfo, NarInfoError> {
        let mut store_dir = None;
        let mut want_mass_query = None;
        let mut priority = None;
        for field in fields(text) {
            let (line, key, value) = field?;
            match key {
                "StoreDir" => once(&mut store_dir, line, key, value.to_string())?,
                "WantMassQuery" => once(&mut want_mass_query, line, key, value == "1")?,
                "Priority" => {
                    let number = parse_number(line, key, value)?;
                    let number = u32::try_from(number)
                        .map_err(|_| bad(line, format!("Priority {number} is too large")))?;
                    once(&mut priority, line, key, number)?
                }
                _ => {}
            }
        }
        let store_dir = store_dir
            .filter(|dir| !dir.is_empty())
            .ok_or_else(|| bad(text.lines().count().max(1), "missing StoreDir"))?;
        Ok(CacheInfo {
            store_dir,
            want_mass_query: want_mass_query.unwrap_or(false),
            priority,
        })
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "StoreDir: {}\nWantMassQuery: {}\n",
            self.store_dir,
            u8::from(self.want_mass_query)
        );
        if let Some(priority) = self.priority {
            out += &format!("Priority: {priority}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "StorePath: /nix/store/1q82x5ah029adc0r5p06p3ivlzzh3hss-empty\n\
URL: nar/1ngi1qx4ksh7hx1b0y3r1zi6h59amb8hqgfm0hx5cw6ghxvp4qay.nar.zst\n\
Compression: zstd\n\
FileHash: sha256:1ngi1qx4ksh7hx1b0y3r1zi6h59amb8hqgfm0hx5cw6ghxvp4qay\n\
FileSize: 57\n\
NarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\n\
NarSize: 112\n\
References: \n\
Deriver: 97qlv6h78lxlm9zc8849ahsbcklhsi2y-empty.drv\n\
Sig: a:AAAA\n\
Sig: b:BBBB\n\
CA: fixed:sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\n";

    #[test]
    fn parses_and_renders_identically() {
        let info = NarInfo::parse(SAMPLE).unwrap();
        assert_eq!(info.store_path.name().as_str(), "empty");
        assert_eq!(info.compression, Compression::Zstd);
        assert_eq!(info.file_size, Some(57));
        assert_eq!(info.nar_size, 112);
        assert!(info.references.is_empty());
        assert_eq!(info.sigs, ["a:AAAA", "b:BBBB"]);
        assert_eq!(info.render(), SAMPLE);
    }

    #[test]
    fn ignores_unknown_keys_and_defaults_compression() {
        let text = SAMPLE.replace("Compression: zstd\n", "System: x86_64-linux\n");
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.compression, Compression::Bzip2);
        let empty = SAMPLE.replace("Compression: zstd\n", "Compression: \n");
        assert_eq!(
            NarInfo::parse(&empty).unwrap().compression,
            Compression::Bzip2
        );
        let unknown = SAMPLE.replace("Compression: zstd\n", "Compression: br\n");
        assert_eq!(NarInfo::parse(&unknown).unwrap_err().line, 3);
    }

    #[test]
    fn refuses_urls_outside_the_cache() {
        for url in [
            "/etc/passwd",
            "../x",
            "nar/../../x",
            "nar//x",
            "./x",
            "",
            "file:///etc/passwd",
            "https://example.org/nar/x",
            "nar/x/..",
        ] {
            let text = SAMPLE.replace(
                "URL: nar/1ngi1qx4ksh7hx1b0y3r1zi6h59amb8hqgfm0hx5cw6ghxvp4qay.nar.zst",
                &format!("URL: {url}"),
            );
            let err = NarInfo::parse(&text).unwrap_err();
            assert_eq!(err.line, 2, "{url}: {err}");
        }
        assert_eq!(
            NarUrl::new("nar/x.nar.zst").unwrap().as_path(),
            Path::new("nar/x.nar.zst")
        );
    }

    #[test]
    fn refuses_a_field_given_twice() {
        let text = SAMPLE.replace("NarSize: 112\n", "NarSize: 112\nNarSize: 1\n");
        let err = NarInfo::parse(&text).unwrap_err();
        assert_eq!(err, bad(8, "NarSize given twice"));
        let text = SAMPLE.replace("URL: ", "URL: nar/x.nar\nURL: ");
        assert_eq!(NarInfo::parse(&text).unwrap_err().line, 3);
        // Sig is the one field that repeats.
        assert_eq!(NarInfo::parse(SAMPLE).unwrap().sigs.len(), 2);
    }

    #[test]
    fn reports_the_line_of_an_error() {
        let text = SAMPLE.replace("NarSize: 112", "NarSize: lots");
        match NarInfo::parse(&text) {
            Err(NarInfoError { line: 7, reason }) => assert!(reason.contains("NarSize")),
            other => panic!("{other:?}"),
        }
        let text = SAMPLE.replace("FileSize: 57", "FileSize 57");
        assert!(matches!(
            NarInfo::parse(&text),
            Err(NarInfoError { line: 5, .. })
        ));
        let text = SAMPLE.replace("NarHash", "Narhash");
        assert!(NarInfo::parse(&text)
            .unwrap_err()
            .to_string()
            .contains("missing NarHash"));
    }

    #[test]
    fn fingerprint_uses_full_reference_paths() {
        let mut info = NarInfo::parse(SAMPLE).unwrap();
        info.references = vec![
            StorePath::from_base_name("1q82x5ah029adc0r5p06p3ivlzzh3hss-empty").unwrap(),
            StorePath::from_base_name("97qlv6h78lxlm9zc8849ahsbcklhsi2y-b").unwrap(),
        ];
        assert_eq!(
            info.fingerprint(),
            "1;/nix/store/1q82x5ah029adc0r5p06p3ivlzzh3hss-empty;\
             sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;112;\
             /nix/store/1q82x5ah029adc0r5p06p3ivlzzh3hss-empty,\
             /nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-b"
        );
    }

    #[test]
    fn cache_info_round_trips() {
        let text = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";
        let info = CacheInfo::parse(text).unwrap();
        assert_eq!(info.priority, Some(30));
        assert!(info.want_mass_query);
        assert_eq!(info.render(), text);
    }
}
