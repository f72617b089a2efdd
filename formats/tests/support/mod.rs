//! A NAR as a list of nodes, so tests can decode one and encode it again.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use srcgrab_formats::nar::{self, NarEncoder, NarError, NarVisitor};

/// One node, parents before children, paths relative to the root (the root is "").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Directory(PathBuf),
    Symlink(PathBuf, PathBuf),
    Regular(PathBuf, bool, Vec<u8>),
}

impl Node {
    fn path(&self) -> &Path {
        match self {
            Node::Directory(p) | Node::Symlink(p, _) | Node::Regular(p, _, _) => p,
        }
    }
}

struct Collect(Vec<Node>);

impl NarVisitor for Collect {
    type Error = NarError;
    fn directory(&mut self, path: &Path) -> Result<(), NarError> {
        self.0.push(Node::Directory(path.to_path_buf()));
        Ok(())
    }
    fn symlink(&mut self, path: &Path, target: &Path) -> Result<(), NarError> {
        self.0
            .push(Node::Symlink(path.to_path_buf(), target.to_path_buf()));
        Ok(())
    }
    fn regular(
        &mut self,
        path: &Path,
        executable: bool,
        _size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        let mut data = Vec::new();
        contents.read_to_end(&mut data).map_err(NarError::Read)?;
        self.0
            .push(Node::Regular(path.to_path_buf(), executable, data));
        Ok(())
    }
}

/// The nodes of a NAR, and its size.
pub fn decode(bytes: &[u8]) -> Result<(Vec<Node>, u64), NarError> {
    let mut collect = Collect(Vec::new());
    let size = nar::parse(bytes, &mut collect)?;
    Ok((collect.0, size))
}

/// The NAR of `nodes` (as [`decode`] gives them).
pub fn encode(nodes: &[Node]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = NarEncoder::new(&mut out).unwrap();
    let mut next = 0;
    encode_node(&mut encoder, nodes, &mut next);
    assert_eq!(next, nodes.len(), "every node is under the root");
    out
}

fn encode_node(encoder: &mut NarEncoder<&mut Vec<u8>>, nodes: &[Node], next: &mut usize) {
    let node = &nodes[*next];
    *next += 1;
    match node {
        Node::Regular(_, executable, data) => encoder
            .regular(&mut data.as_slice(), data.len() as u64, *executable)
            .unwrap(),
        Node::Symlink(_, target) => encoder.symlink(target.as_os_str().as_bytes()).unwrap(),
        Node::Directory(dir) => {
            encoder.directory().unwrap();
            while *next < nodes.len() && nodes[*next].path().parent() == Some(dir.as_path()) {
                let name = nodes[*next].path().file_name().unwrap().as_bytes().to_vec();
                encoder.entry(&name).unwrap();
                encode_node(encoder, nodes, next);
                encoder.end_entry().unwrap();
            }
            encoder.end_directory().unwrap();
        }
    }
}
