//! Writes two synthetic manifests for benchmarks (`bench/diff.sh`): OLD with N entries and
//! NEW where about 1% of packages got a new version, 0.5% were removed, 0.5% added and
//! 0.5% changed only metadata. Deterministic: the same arguments give the same files.
//!
//! usage: cargo run --release -p srcgrab-manifest --example gen_manifest -- N OLD.json NEW.json

use srcgrab_manifest::{
    ContentAddress, Entry, GitSource, Hash, HashAlgo, HashMode, Kind, Manifest, Provenance,
    StorePath, StorePathName, Unpack, MANIFEST_VERSION,
};

/// The fixed-output path of `name` (a generated, always valid name).
fn fixed_output_path(name: &str, ca: &ContentAddress) -> StorePath {
    ca.store_path(&StorePathName::new(name).expect("generated names are valid"))
}

const SYSTEMS: [&str; 4] = [
    "aarch64-darwin",
    "aarch64-linux",
    "x86_64-darwin",
    "x86_64-linux",
];

/// splitmix64: enough randomness for a benchmark, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One synthetic package's source; `id` names the package, `version` its release.
fn entry(id: u64, version: u64, rng: &mut Rng) -> Entry {
    let kind = match rng.below(100) {
        0..=69 => Kind::Url,
        70..=84 => Kind::UrlUnpack,
        85..=94 => Kind::Git,
        _ => Kind::Other,
    };
    let pname = format!("pkg{id}");
    let ver = format!("{}.{}.{}", version / 100, version / 10 % 10, version % 10);
    let (name, mode, urls, git, unpack) = match kind {
        Kind::Url => (
            format!("{pname}-{ver}.tar.gz"),
            HashMode::Flat,
            vec![format!("https://example.org/{pname}/{pname}-{ver}.tar.gz")],
            None,
            None,
        ),
        Kind::UrlUnpack => (
            "source".to_string(),
            HashMode::Recursive,
            vec![format!(
                "https://github.com/owner/{pname}/archive/v{ver}.tar.gz"
            )],
            None,
            Some(Unpack {
                strip_root: true,
                extension: None,
            }),
        ),
        Kind::Git => (
            "source".to_string(),
            HashMode::Recursive,
            vec![],
            Some(GitSource::plain(
                format!("https://git.example.org/{pname}.git"),
                format!("{:040x}", rng.next() as u128 * 31 + version as u128),
            )),
            None,
        ),
        _ => (
            format!("{pname}-{ver}-vendor"),
            HashMode::Recursive,
            vec![],
            None,
            None,
        ),
    };
    let hash = Hash {
        algo: HashAlgo::Sha256,
        bytes: HashAlgo::Sha256.digest(format!("{id}/{version}/{kind}").as_bytes()),
    };
    let mask = 1 + rng.below(15);
    let systems = SYSTEMS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| s.to_string())
        .collect();
    let drv_path = fixed_output_path(
        &format!("{pname}.drv"),
        &ContentAddress {
            mode: HashMode::Flat,
            hash: hash.clone(),
        },
    )
    .to_path_string()
    .parse()
    .expect("a .drv name makes a derivation path");
    let ca = ContentAddress { mode, hash };
    Entry {
        store_path: fixed_output_path(&name, &ca),
        name,
        hash: ca,
        kind,
        original_urls: urls.clone(),
        urls,
        executable: false,
        post_fetch: kind == Kind::UrlUnpack,
        unpack,
        git,
        drv_paths: [("x86_64-linux".to_string(), drv_path)].into(),
        systems,
        attrs: vec![pname],
        attr_count: 1 + rng.below(50),
    }
}

fn manifest(entries: Vec<Entry>) -> Manifest {
    let mut m = Manifest {
        version: MANIFEST_VERSION,
        provenance: Provenance {
            systems: SYSTEMS.iter().map(|s| s.to_string()).collect(),
            nix_version: "nix-instantiate (Nix) 2.8.0".into(),
            ..Provenance::default()
        },
        failures: vec![],
        entries,
        build: Default::default(),
    };
    m.normalize();
    m
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [n, old_path, new_path] = args.as_slice() else {
        return Err("usage: gen_manifest N OLD.json NEW.json".into());
    };
    let n: u64 = n.parse()?;
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for id in 0..n {
        // Each package draws from its own stream, so OLD and NEW agree on what did not change.
        let mut rng = Rng(id);
        let version = 100 + rng.below(800);
        let before = entry(id, version, &mut Rng(id));
        match rng.below(200) {
            0 | 1 => new.push(entry(id, version + 1, &mut Rng(id))),
            2 => {}
            3 => {
                let mut changed = before.clone();
                changed.attr_count += 1;
                new.push(changed);
            }
            _ => new.push(before.clone()),
        }
        old.push(before);
        if rng.below(200) == 0 {
            new.push(entry(n + id, 100, &mut Rng(n + id)));
        }
    }
    std::fs::write(old_path, manifest(old).to_json())?;
    std::fs::write(new_path, manifest(new).to_json())?;
    Ok(())
}
