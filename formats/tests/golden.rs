//! The codecs against bytes the real Nix wrote (`tests/golden/regenerate` made them with
//! Nix 2.8), so these tests need no Nix.

mod support;

use std::path::{Path, PathBuf};

use srcgrab_formats::aterm;
use srcgrab_formats::hash::{Hash, HashAlgo, HashMode};
use srcgrab_formats::nar;
use srcgrab_formats::narinfo::{Compression, NarInfo};
use srcgrab_formats::{ContentAddress, StorePath, StorePathName};
use support::Node;

fn golden(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden_text(name: &str) -> String {
    String::from_utf8(golden(name)).unwrap()
}

#[test]
fn a_tree_nar_from_nix_decodes_to_its_nodes_and_encodes_back_byte_for_byte() {
    let bytes = golden("tree.nar");
    let (nodes, size) = support::decode(&bytes).unwrap();
    assert_eq!(size, bytes.len() as u64);
    let p = PathBuf::from;
    for expected in [
        Node::Directory(p("")),
        Node::Regular(p("B"), false, b"B".to_vec()),
        Node::Regular(p("a"), false, b"a".to_vec()),
        Node::Directory(p("empty-dir")),
        Node::Regular(p("empty"), false, Vec::new()),
        Node::Regular(p("run.sh"), true, b"#!/bin/sh\necho hi\n".to_vec()),
        Node::Symlink(p("sub/link"), p("../run.sh")),
        Node::Regular(p("sub/file"), false, b"hello\n".to_vec()),
        Node::Regular(p("sub/deeper/padded"), false, vec![b'x'; 1000]),
    ] {
        assert!(nodes.contains(&expected), "{expected:?} in {nodes:?}");
    }
    // Byte order: "B" sorts before "a".
    let names: Vec<&Path> = nodes
        .iter()
        .filter_map(|n| match n {
            Node::Regular(path, ..) if path.parent() == Some(Path::new("")) => Some(path.as_path()),
            _ => None,
        })
        .collect();
    assert_eq!(names[..2], [Path::new("B"), Path::new("a")]);
    assert_eq!(support::encode(&nodes), bytes);
}

#[test]
fn a_single_file_nar_is_what_nix_dumps_for_the_file() {
    let contents = golden("file.contents");
    let mut ours = Vec::new();
    let size = nar::write_file_nar(
        &mut contents.as_slice(),
        contents.len() as u64,
        false,
        &mut ours,
    )
    .unwrap();
    assert_eq!(ours, golden("file.nar"));
    assert_eq!(size, nar::file_nar_size(contents.len() as u64, false));
}

#[test]
fn fixed_output_paths_are_the_ones_nix_store_add_fixed_printed() {
    let vectors = golden_text("store-paths.txt");
    let mut checked = 0;
    for line in vectors.lines() {
        let [mode, algo, hash, name, path]: [&str; 5] =
            line.split(' ').collect::<Vec<_>>().try_into().unwrap();
        let ca = ContentAddress {
            mode: if mode == "recursive" {
                HashMode::Recursive
            } else {
                HashMode::Flat
            },
            hash: Hash::parse(&format!("{algo}:{hash}"), None).unwrap(),
        };
        let ours = ca.store_path(&StorePathName::new(name).unwrap());
        assert_eq!(ours.to_path_string(), path, "{line}");
        assert_eq!(StorePath::parse(path).unwrap(), ours);
        checked += 1;
    }
    assert_eq!(checked, 6, "three algorithms, both modes");
}

#[test]
fn narinfos_nix_wrote_parse_and_render_identically() {
    for (file, compression, extension) in [
        ("tree-xz.narinfo", Compression::Xz, ".nar.xz"),
        ("tree-none.narinfo", Compression::None, ".nar"),
    ] {
        let text = golden_text(file);
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.compression, compression, "{file}");
        assert!(info.url.as_str().ends_with(extension), "{file}");
        assert_eq!(info.store_path.name().as_str(), "tree");
        assert_eq!(info.nar_size, golden("tree.nar").len() as u64);
        assert_eq!(
            info.nar_hash,
            Hash {
                algo: HashAlgo::Sha256,
                bytes: HashAlgo::Sha256.digest(&golden("tree.nar")),
            }
        );
        let ca = info.ca.clone().unwrap();
        assert_eq!(ca.mode, HashMode::Recursive);
        assert_eq!(ca.store_path(info.store_path.name()), info.store_path);
        assert_eq!(info.render(), text, "{file}");
    }
}

#[test]
fn derivations_nix_wrote_parse_and_print_back_byte_for_byte() {
    let fixed = golden_text("fixed.drv");
    let drv = aterm::parse(fixed.as_bytes()).unwrap();
    let out = drv.fixed_output().unwrap();
    assert_eq!(out.hash_algo, "r:sha256");
    assert_eq!(drv.env_str("name"), "fixed-source");
    assert_eq!(drv.to_aterm(), fixed);

    let escapes = golden_text("escapes.drv");
    let drv = aterm::parse(escapes.as_bytes()).unwrap();
    assert!(drv.fixed_output().is_none());
    assert_eq!(drv.outputs.len(), 2);
    assert_eq!(drv.input_drvs.len(), 1);
    assert_eq!(drv.input_srcs.len(), 1);
    assert_eq!(
        drv.env_str("text"),
        "quote \" backslash \\ newline \n tab \t return \r dollar $ unicode é"
    );
    assert_eq!(drv.to_aterm(), escapes);
}
