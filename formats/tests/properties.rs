//! Property tests, bounded so CI stays fast: no parser panics on any input, and what the
//! encoders write the parsers read back unchanged (and re-encode byte for byte).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use srcgrab_formats::aterm::{self, Derivation, DrvOutput};
use srcgrab_formats::hash::{Hash, HashAlgo, HashMode};
use srcgrab_formats::narinfo::{CacheInfo, Compression, NarInfo, NarUrl};
use srcgrab_formats::{nixbase32, ContentAddress, StorePath, StorePathName};
use support::Node;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    }
}

fn name() -> impl Strategy<Value = StorePathName> {
    "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{0,40}".prop_map(|n| StorePathName::new(&n).unwrap())
}

fn store_path() -> impl Strategy<Value = StorePath> {
    (prop::collection::vec(any::<u8>(), 20), name()).prop_map(|(digest, name)| {
        StorePath::from_base_name(&format!("{}-{name}", nixbase32::encode(&digest))).unwrap()
    })
}

fn hash() -> impl Strategy<Value = Hash> {
    prop::sample::select(HashAlgo::ALL.to_vec()).prop_flat_map(|algo| {
        prop::collection::vec(any::<u8>(), algo.size()).prop_map(move |bytes| Hash { algo, bytes })
    })
}

fn content_address() -> impl Strategy<Value = ContentAddress> {
    (prop::bool::ANY, hash()).prop_map(|(recursive, hash)| ContentAddress {
        mode: if recursive {
            HashMode::Recursive
        } else {
            HashMode::Flat
        },
        hash,
    })
}

fn compression() -> impl Strategy<Value = Compression> {
    prop::sample::select(vec![
        Compression::None,
        Compression::Xz,
        Compression::Zstd,
        Compression::Bzip2,
    ])
}

fn narinfo() -> impl Strategy<Value = NarInfo> {
    (
        store_path(),
        "[a-z0-9]{1,8}(/[a-z0-9][a-z0-9.]{0,11}){0,2}",
        compression(),
        prop::option::of(hash()),
        prop::option::of(any::<u64>()),
        hash(),
        any::<u64>(),
        prop::collection::vec(store_path(), 0..4),
        prop::option::of(store_path()),
        prop::collection::vec("[a-z0-9-]{1,8}:[A-Za-z0-9+/=]{1,20}", 0..3),
        prop::option::of(content_address()),
    )
        .prop_map(
            |(
                store_path,
                url,
                compression,
                file_hash,
                file_size,
                nar_hash,
                nar_size,
                references,
                deriver,
                sigs,
                ca,
            )| {
                NarInfo {
                    store_path,
                    url: NarUrl::new(&url).unwrap(),
                    compression,
                    file_hash,
                    file_size,
                    nar_hash,
                    nar_size,
                    references,
                    deriver,
                    sigs,
                    ca,
                }
            },
        )
}

/// Any Unicode text but the characters Nix cannot keep in a `.drv` string as they are.
fn drv_string() -> impl Strategy<Value = String> {
    "(?s).{0,24}"
}

fn derivation() -> impl Strategy<Value = Derivation> {
    let output = (drv_string(), drv_string(), drv_string(), drv_string()).prop_map(
        |(name, path, hash_algo, hash)| DrvOutput {
            name,
            path,
            hash_algo,
            hash,
        },
    );
    (
        prop::collection::vec(output, 0..3),
        prop::collection::btree_map(
            drv_string(),
            prop::collection::vec(drv_string(), 0..3),
            0..3,
        ),
        prop::collection::vec(drv_string(), 0..3),
        drv_string(),
        drv_string(),
        prop::collection::vec(drv_string(), 0..3),
        prop::collection::btree_map(drv_string(), drv_string(), 0..4),
    )
        .prop_map(
            |(outputs, input_drvs, input_srcs, system, builder, args, env)| Derivation {
                outputs,
                input_drvs,
                input_srcs,
                system,
                builder,
                args,
                env,
            },
        )
}

/// A tree of NAR nodes in decoder order (parents first, entries sorted by name).
fn tree() -> impl Strategy<Value = Vec<Node>> {
    let leaf = prop_oneof![
        (prop::bool::ANY, prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(x, data)| Tree::File(x, data)),
        "[a-z./]{1,20}".prop_map(Tree::Link),
    ];
    let tree = leaf.prop_recursive(4, 24, 5, |inner| {
        prop::collection::btree_map("[a-zA-Z0-9_.-]{1,8}", inner, 0..5).prop_map(|entries| {
            Tree::Dir(
                entries
                    .into_iter()
                    .filter(|(n, _)| n != "." && n != "..")
                    .collect(),
            )
        })
    });
    tree.prop_map(|t| {
        let mut nodes = Vec::new();
        flatten(&t, PathBuf::new(), &mut nodes);
        nodes
    })
}

#[derive(Debug, Clone)]
enum Tree {
    File(bool, Vec<u8>),
    Link(String),
    Dir(BTreeMap<String, Tree>),
}

fn flatten(tree: &Tree, path: PathBuf, nodes: &mut Vec<Node>) {
    match tree {
        Tree::File(executable, data) => nodes.push(Node::Regular(path, *executable, data.clone())),
        Tree::Link(target) => nodes.push(Node::Symlink(path, PathBuf::from(target))),
        Tree::Dir(entries) => {
            nodes.push(Node::Directory(path.clone()));
            for (name, child) in entries {
                flatten(child, path.join(name), nodes);
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn nar_trees_round_trip(nodes in tree()) {
        let bytes = support::encode(&nodes);
        let (decoded, size) = support::decode(&bytes).unwrap();
        prop_assert_eq!(size, bytes.len() as u64);
        prop_assert_eq!(&decoded, &nodes);
        prop_assert_eq!(support::encode(&decoded), bytes);
    }

    #[test]
    fn the_nar_decoder_never_panics_and_what_it_accepts_reencodes_identically(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Ok((nodes, _)) = support::decode(&bytes) {
            prop_assert_eq!(support::encode(&nodes), bytes);
        }
    }

    #[test]
    fn damaged_nars_are_refused_without_panicking(
        nodes in tree(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..,
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = support::encode(&nodes);
        let mut flipped = bytes.clone();
        let i = at.index(flipped.len());
        flipped[i] ^= flip;
        // A flip inside file contents still gives a valid (different) NAR.
        if let Ok((decoded, _)) = support::decode(&flipped) {
            prop_assert_eq!(support::encode(&decoded), flipped);
        }
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(support::decode(truncated).is_err());
    }

    #[test]
    fn narinfos_round_trip(info in narinfo()) {
        let text = info.render();
        prop_assert_eq!(NarInfo::parse(&text).unwrap(), info);
    }

    #[test]
    fn the_narinfo_parser_never_panics(text in "(?s).{0,400}") {
        let _ = NarInfo::parse(&text);
        let _ = CacheInfo::parse(&text);
    }

    #[test]
    fn narinfo_like_text_never_panics(
        lines in prop::collection::vec(
            ("(StorePath|URL|Compression|FileHash|FileSize|NarHash|NarSize|References|Deriver|Sig|CA)", "[ -~]{0,60}"),
            0..12,
        ),
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        if let Ok(info) = NarInfo::parse(&text) {
            prop_assert_eq!(NarInfo::parse(&info.render()).unwrap(), info);
        }
    }

    #[test]
    fn derivations_round_trip(drv in derivation()) {
        let text = drv.to_aterm();
        prop_assert_eq!(aterm::parse(text.as_bytes()).unwrap(), drv);
    }

    #[test]
    fn the_aterm_parser_never_panics_and_what_it_accepts_prints_back(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        if let Ok(drv) = aterm::parse(&bytes) {
            prop_assert_eq!(aterm::parse(drv.to_aterm().as_bytes()).unwrap(), drv);
        }
    }

    #[test]
    fn aterm_like_text_never_panics(text in r#"Derive\(\[(\("[a-z\\"]{0,4}","[a-z]{0,4}","","[a-z]{0,2}"\),?){0,2}\],\[\],\[\],"[a-z\\]{0,3}","",\[\],\[\]\)?.{0,3}"#) {
        if let Ok(drv) = aterm::parse(text.as_bytes()) {
            prop_assert_eq!(aterm::parse(drv.to_aterm().as_bytes()).unwrap(), drv);
        }
    }

    #[test]
    fn hashes_round_trip_in_every_encoding(hash in hash()) {
        for text in [hash.to_sri(), hash.to_nix32_prefixed(), format!("{}:{}", hash.algo, hash.to_hex())] {
            prop_assert_eq!(Hash::parse(&text, None).unwrap(), hash.clone());
        }
        prop_assert_eq!(Hash::parse_digest(hash.algo, &hash.to_base64()).unwrap(), hash.clone());
    }

    #[test]
    fn hash_and_base32_parsers_never_panic(text in "(?s).{0,140}", len in 0usize..70) {
        let _ = Hash::parse(&text, None);
        let _ = Hash::parse(&text, Some(HashAlgo::Sha256));
        if let Some(bytes) = nixbase32::decode(&text, len) {
            prop_assert_eq!(nixbase32::encode(&bytes), text);
        }
    }

    #[test]
    fn store_paths_and_content_addresses_round_trip(path in store_path(), ca in content_address()) {
        prop_assert_eq!(StorePath::parse(&path.to_path_string()).unwrap(), path.clone());
        prop_assert_eq!(StorePath::from_base_name(&path.base_name()).unwrap(), path);
        prop_assert_eq!(ca.to_string().parse::<ContentAddress>().unwrap(), ca);
    }

    #[test]
    fn store_path_and_content_address_parsers_never_panic(text in "(?s).{0,120}") {
        let _ = StorePath::parse(&text);
        let _ = StorePath::from_base_name(&text);
        let _ = StorePathName::new(&text);
        let _ = text.parse::<ContentAddress>();
        let _ = NarUrl::new(&text);
    }
}
