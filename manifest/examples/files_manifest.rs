//! Prints a manifest with one flat sha256 `url` entry per file in a directory, named after
//! the file (for benchmarks: `bench/verify.sh` ingests the files into a cache with it).
//!
//! usage: cargo run --release -p srcgrab-manifest --example files_manifest -- DIR > m.json

use srcgrab_manifest::{
    Entry, Hash, HashAlgo, HashMode, Kind, Manifest, Provenance, StorePathName, MANIFEST_VERSION,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: files_manifest DIR")?;
    let mut entries = Vec::new();
    for file in std::fs::read_dir(&dir)? {
        let file = file?;
        let name = StorePathName::new(&file.file_name().to_string_lossy())?;
        let mut hasher = HashAlgo::Sha256.hasher();
        std::io::copy(&mut std::fs::File::open(file.path())?, &mut hasher)?;
        let hash: Hash = hasher.finalize();
        entries.push(Entry {
            drv_paths: [(
                "x86_64-linux".into(),
                "/nix/store/00000000000000000000000000000000-bench.drv"
                    .parse()
                    .unwrap(),
            )]
            .into(),
            systems: vec!["x86_64-linux".into()],
            attrs: vec![name.to_string()],
            attr_count: 1,
            ..Entry::new(&name, HashMode::Flat, &hash, Kind::Url)
        });
    }
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        provenance: Provenance {
            systems: vec!["x86_64-linux".into()],
            nix_version: "bench".into(),
            ..Provenance::default()
        },
        failures: vec![],
        entries,
        build: Default::default(),
    };
    manifest.normalize();
    print!("{}", manifest.to_json());
    Ok(())
}
