//! Lists of store paths, as a channel's `store-paths.xz` is: one `/nix/store/...` a line,
//! plain or compressed with xz or zstd (told by the magic bytes, not the file name, so
//! stdin works too).

use srcgrab_formats::store_path::StorePath;
use std::io::{BufRead, BufReader, Read};

use crate::Error;

const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Reads every store path of a list; blank lines and `#` comments are skipped, a line that
/// is not a store path is an error naming it (a silently skipped path would be a path
/// missing offline). `what` names the list in errors.
pub fn read_path_list(input: impl Read, what: &str) -> Result<Vec<StorePath>, Error> {
    let mut buffered = BufReader::with_capacity(256 * 1024, input);
    let head = buffered
        .fill_buf()
        .map_err(Error::io(format!("reading {what}")))?;
    let lines: Box<dyn BufRead> = if head.starts_with(XZ_MAGIC) {
        Box::new(BufReader::new(xz2::read::XzDecoder::new_multi_decoder(
            buffered,
        )))
    } else if head.starts_with(ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(buffered)
            .map_err(Error::io(format!("reading {what}")))?;
        Box::new(BufReader::new(decoder))
    } else {
        Box::new(buffered)
    };
    let mut paths = Vec::new();
    for (index, line) in lines.lines().enumerate() {
        let line = line.map_err(Error::io(format!("reading {what}")))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let path = StorePath::parse(line).map_err(|e| Error::BadPathList {
            what: format!("{what} line {}", index + 1),
            reason: e.to_string(),
        })?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const LIST: &str = "/nix/store/7axliih0sjilbssndsdyl3h42l1ffl37-a\n\n# comment\n/nix/store/1lkng22apxd5rf03vpzlpjld1sq5bqmm-b-1.0\n";

    fn names(paths: Vec<StorePath>) -> Vec<String> {
        paths.into_iter().map(|p| p.name().to_string()).collect()
    }

    #[test]
    fn reads_plain_xz_and_zstd_lists_alike() {
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(LIST.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        let zstd = zstd::encode_all(LIST.as_bytes(), 3).unwrap();
        for bytes in [LIST.as_bytes().to_vec(), xz, zstd] {
            assert_eq!(
                names(read_path_list(&bytes[..], "list").unwrap()),
                ["a", "b-1.0"]
            );
        }
    }

    #[test]
    fn a_line_that_is_no_store_path_is_an_error_with_its_line() {
        let err = read_path_list(
            &b"/nix/store/7axliih0sjilbssndsdyl3h42l1ffl37-a\n/tmp/x\n"[..],
            "list",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("list line 2"), "{err}");
        assert!(err.contains("/tmp/x"), "{err}");
    }
}
