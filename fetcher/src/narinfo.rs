//! The `.narinfo` files and `nix-cache-info` of a Nix binary cache: parsing, rendering,
//! and the fingerprint that `Sig:` lines sign.
//!
//! Parsing is as tolerant as Nix's (unknown keys are ignored, so caches written by newer
//! tools still read) but strict about the fields srcgrab relies on.

use srcgrab_manifest::hash::Hash;
use srcgrab_manifest::store_path::{StorePath, STORE_DIR};

use crate::Error;

/// One `<hash>.narinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Relative to the cache root, e.g. `nar/<filehash>.nar.zst`.
    pub url: String,
    /// As written (`none`, `xz`, `zstd`, `bzip2`, ...); Nix reads a missing field as `bzip2`.
    pub compression: String,
    pub file_hash: Option<Hash>,
    pub file_size: Option<u64>,
    pub nar_hash: Hash,
    pub nar_size: u64,
    /// Base names (`<hash>-<name>`), as in the file; empty for sources.
    pub references: Vec<String>,
    /// Base name of the derivation, when known.
    pub deriver: Option<String>,
    /// `keyname:base64sig`, one per `Sig:` line.
    pub sigs: Vec<String>,
    /// Content address, e.g. `fixed:r:sha256:<nix32>`.
    pub ca: Option<String>,
}

fn bad(line: usize, reason: impl Into<String>) -> Error {
    Error::BadNarinfo {
        line,
        reason: reason.into(),
    }
}

/// Splits `Key: value` lines; yields (line number, key, value).
fn fields(text: &str) -> impl Iterator<Item = Result<(usize, &str, &str), Error>> {
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

fn parse_number(line: usize, key: &str, value: &str) -> Result<u64, Error> {
    value
        .parse()
        .map_err(|_| bad(line, format!("{key} is not a number: '{value}'")))
}

fn parse_hash(line: usize, key: &str, value: &str) -> Result<Hash, Error> {
    Hash::parse(value, None).map_err(|e| bad(line, format!("{key}: {e}")))
}

impl NarInfo {
    pub fn parse(text: &str) -> Result<NarInfo, Error> {
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = Vec::new();
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;
        for field in fields(text) {
            let (line, key, value) = field?;
            match key {
                "StorePath" => {
                    let path = StorePath::parse(value).map_err(|e| bad(line, e.to_string()))?;
                    store_path = Some(path);
                }
                "URL" => url = Some(value.to_string()),
                "Compression" => compression = Some(value.to_string()),
                "FileHash" => file_hash = Some(parse_hash(line, key, value)?),
                "FileSize" => file_size = Some(parse_number(line, key, value)?),
                "NarHash" => nar_hash = Some(parse_hash(line, key, value)?),
                "NarSize" => nar_size = Some(parse_number(line, key, value)?),
                "References" => references = value.split_whitespace().map(str::to_string).collect(),
                "Deriver" if value != "unknown-deriver" && !value.is_empty() => {
                    deriver = Some(value.to_string())
                }
                "Sig" => sigs.push(value.to_string()),
                "CA" if !value.is_empty() => ca = Some(value.to_string()),
                _ => {}
            }
        }
        let last = text.lines().count().max(1);
        let missing = |key: &str| bad(last, format!("missing {key}"));
        Ok(NarInfo {
            store_path: store_path.ok_or_else(|| missing("StorePath"))?,
            url: url.ok_or_else(|| missing("URL"))?,
            compression: compression.unwrap_or_else(|| "bzip2".into()),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or_else(|| missing("NarHash"))?,
            nar_size: nar_size.ok_or_else(|| missing("NarSize"))?,
            references,
            deriver,
            sigs,
            ca,
        })
    }

    /// The text Nix writes, field order included.
    pub fn render(&self) -> String {
        let mut out = format!(
            "StorePath: {}\nURL: {}\nCompression: {}\n",
            self.store_path.to_path_string(),
            self.url,
            self.compression
        );
        if let Some(hash) = &self.file_hash {
            out += &format!("FileHash: {}\n", hash.to_nix32_prefixed());
        }
        if let Some(size) = self.file_size {
            out += &format!("FileSize: {size}\n");
        }
        out += &format!(
            "NarHash: {}\nNarSize: {}\nReferences: {}\n",
            self.nar_hash.to_nix32_prefixed(),
            self.nar_size,
            self.references.join(" ")
        );
        if let Some(deriver) = &self.deriver {
            out += &format!("Deriver: {deriver}\n");
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
            .map(|r| format!("{STORE_DIR}/{r}"))
            .collect();
        format!(
            "1;{};{};{};{}",
            self.store_path.to_path_string(),
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
    pub fn parse(text: &str) -> Result<CacheInfo, Error> {
        let mut info = CacheInfo {
            store_dir: String::new(),
            want_mass_query: false,
            priority: None,
        };
        for field in fields(text) {
            let (line, key, value) = field?;
            match key {
                "StoreDir" => info.store_dir = value.to_string(),
                "WantMassQuery" => info.want_mass_query = value == "1",
                "Priority" => {
                    let priority = parse_number(line, key, value)?;
                    let priority = u32::try_from(priority)
                        .map_err(|_| bad(line, format!("Priority {priority} is too large")))?;
                    info.priority = Some(priority);
                }
                _ => {}
            }
        }
        if info.store_dir.is_empty() {
            return Err(bad(text.lines().count().max(1), "missing StoreDir"));
        }
        Ok(info)
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
        assert_eq!(info.store_path.name, "empty");
        assert_eq!(info.compression, "zstd");
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
        assert_eq!(info.compression, "bzip2");
    }

    #[test]
    fn reports_the_line_of_an_error() {
        let text = SAMPLE.replace("NarSize: 112", "NarSize: lots");
        match NarInfo::parse(&text) {
            Err(Error::BadNarinfo { line: 7, reason }) => assert!(reason.contains("NarSize")),
            other => panic!("{other:?}"),
        }
        let text = SAMPLE.replace("FileSize: 57", "FileSize 57");
        assert!(matches!(
            NarInfo::parse(&text),
            Err(Error::BadNarinfo { line: 5, .. })
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
            "1q82x5ah029adc0r5p06p3ivlzzh3hss-empty".into(),
            "97qlv6h78lxlm9zc8849ahsbcklhsi2y-b".into(),
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
