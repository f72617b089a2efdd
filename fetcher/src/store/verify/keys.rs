//! The hashed mirror's keys: every symlink outside `nar/` must be one a publish makes, that
//! is, the relative link from a key naming a hash to the mirror file with exactly that hash.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use srcgrab_formats::hash::{Hash, HashAlgo};

use super::Corrupt;
use crate::store::layout::{keys_of_hash, mirror_key_algo, mirror_link_target, normal_key};
use crate::store::regular_file;
use crate::store::DiskLayout;

/// The mirror file (hex name) a key links to, and the algorithm the key is of.
type KeyOf = (String, HashAlgo);

/// Checks every key symlink; `mirror_files` are the hex names under `sha256/`.
pub(super) fn check_keys(
    root: &Path,
    keys: &[PathBuf],
    mirror_files: &HashSet<&str>,
) -> Vec<Corrupt> {
    let resolved: Vec<(&PathBuf, Result<KeyOf, String>)> = keys
        .par_iter()
        .map(|key| (key, resolve(root, key, mirror_files)))
        .collect();
    // A key of another algorithm than sha256 needs its file hashed with that algorithm;
    // each (file, algorithm) once.
    let wanted: BTreeSet<(String, HashAlgo)> = resolved
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    let keys_of: HashMap<KeyOf, Result<HashSet<PathBuf>, String>> = wanted
        .into_par_iter()
        .map(|(file, algo)| {
            let keys = file_hash(root, &file, algo)
                .map(|hash| keys_of_hash(&hash).iter().map(|k| normal_key(k)).collect());
            ((file, algo), keys)
        })
        .collect();
    resolved
        .into_iter()
        .filter_map(|(key, resolved)| {
            let reason = match resolved.and_then(|file| keys_of[&file].clone()) {
                Ok(keys) if keys.contains(key) => return None,
                Ok(_) => "names another hash than the file it links to has".to_string(),
                Err(reason) => reason,
            };
            Some(Corrupt {
                path: key.clone(),
                store_path: None,
                reason: format!("mirror key {reason}"),
            })
        })
        .collect()
}

/// The mirror file a key links to and the algorithm its name is of, or why it is no key.
fn resolve(root: &Path, key: &Path, mirror_files: &HashSet<&str>) -> Result<KeyOf, String> {
    let target = fs::read_link(root.join(key)).map_err(|e| format!("unreadable: {e}"))?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("links to {}, no mirror file", target.display()))?;
    let key_text = key.to_string_lossy();
    if target != mirror_link_target(&key_text, name) {
        return Err(format!(
            "links to {}, not to a file in sha256/",
            target.display()
        ));
    }
    if !mirror_files.contains(name) {
        return Err("points to no file".into());
    }
    let algo = mirror_key_algo(&key_text).ok_or("is a symlink no publish makes")?;
    Ok((name.to_string(), algo))
}

/// The hash of mirror file `hex` in `algo` (its name, for sha256).
fn file_hash(root: &Path, hex: &str, algo: HashAlgo) -> Result<Hash, String> {
    if algo == HashAlgo::Sha256 {
        return Hash::parse_digest(algo, hex).map_err(|e| e.to_string());
    }
    let path = root.join(DiskLayout::mirror_file_name(hex));
    let (mut file, _) = regular_file::open_existing(&path).map_err(|e| e.to_string())?;
    let mut hasher = algo.hasher();
    io::copy(&mut file, &mut hasher).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(hasher.finalize())
}
