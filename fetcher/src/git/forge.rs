//! The git repository behind a forge's archive URL.

use srcgrab_manifest::GitSource;

/// The git source behind a forge archive URL (what fetchFromGitHub, fetchFromGitLab and
/// fetchFromGitea download), for an archive that cannot be downloaded. Only the tree is
/// comparable: an archive leaves out `export-ignore` files, so the hash check decides.
pub fn forge_git_source(archive_url: &str) -> Option<GitSource> {
    let (scheme, rest) = archive_url.split_once("://")?;
    let (host, path) = rest.split_once('/')?;
    let strip_archive_ext = |name: &str| {
        [".tar.gz", ".zip", ".tar.bz2", ".tar"]
            .iter()
            .find_map(|ext| name.strip_suffix(ext))
            .map(str::to_string)
    };
    let (project, rev) = if let Some((project, archive)) = path.split_once("/-/archive/") {
        // GitLab: <project>/-/archive/<rev>/<repo>-<rev>.tar.gz
        let (rev, _file) = archive.rsplit_once('/')?;
        (project.to_string(), rev.to_string())
    } else {
        // GitHub, Gitea, Codeberg: <owner>/<repo>/archive/<rev>.tar.gz
        let (project, file) = path.split_once("/archive/")?;
        if project.split('/').count() != 2 {
            return None;
        }
        (project.to_string(), strip_archive_ext(file)?)
    };
    if rev.is_empty() || project.is_empty() {
        return None;
    }
    Some(GitSource::plain(
        format!("{scheme}://{host}/{project}.git"),
        rev,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_archives_name_their_git_source() {
        let source = |url: &str| forge_git_source(url).map(|s| (s.url, s.rev));
        let pair = |url: &str, rev: &str| Some((url.to_string(), rev.to_string()));
        assert_eq!(
            source("https://github.com/NixOS/nix/archive/0123abcd.tar.gz"),
            pair("https://github.com/NixOS/nix.git", "0123abcd")
        );
        assert_eq!(
            source("https://github.com/o/r/archive/refs/tags/v1.2.tar.gz"),
            pair("https://github.com/o/r.git", "refs/tags/v1.2")
        );
        assert_eq!(
            source("https://codeberg.org/o/r/archive/v2.zip"),
            pair("https://codeberg.org/o/r.git", "v2")
        );
        assert_eq!(
            source("https://gitlab.com/group/sub/proj/-/archive/v3/proj-v3.tar.gz"),
            pair("https://gitlab.com/group/sub/proj.git", "v3")
        );
        assert_eq!(source("https://example.org/pub/hello-2.12.tar.gz"), None);
        assert_eq!(source("https://example.org/a/b/c/archive/x.tar.gz"), None);
    }
}
