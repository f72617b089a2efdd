//! The documentation lists every option the binary has: each subcommand's `--help` is read
//! and every long option it shows must appear in README.md or docs/*.md, so a new flag
//! cannot ship undocumented.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const SUBCOMMANDS: [&str; 10] = [
    "enumerate",
    "merge",
    "fetch",
    "diff",
    "stats",
    "verify",
    "ingest",
    "export",
    "import",
    "check",
];

/// The long options in a `--help` text, in the `  -x, --name <VALUE>` lines clap prints.
fn long_options(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line
                .strip_prefix('-')
                .filter(|rest| !rest.starts_with('-'))
                .map_or(line, |short| short.get(3..).unwrap_or("").trim_start());
            let name = line.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(name.len());
            Some(format!("--{}", &name[..end]))
        })
        .filter(|option| option != "--help" && option != "--version")
        .collect()
}

fn documentation() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    for doc in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = doc.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            text += &std::fs::read_to_string(&path).unwrap();
        }
    }
    text
}

/// Whether `option` appears as a whole option name (`--jobs` does not count for `--jobs-x`).
fn mentions(docs: &str, option: &str) -> bool {
    docs.match_indices(option).any(|(at, _)| {
        !docs[at + option.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn every_option_of_every_subcommand_is_documented() {
    let docs = documentation();
    let mut missing = Vec::new();
    let mut seen = 0;
    for subcommand in SUBCOMMANDS {
        let out = Command::new(env!("CARGO_BIN_EXE_srcgrab"))
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{subcommand} --help");
        let options = long_options(&String::from_utf8(out.stdout).unwrap());
        assert!(!options.is_empty(), "{subcommand} has options");
        seen += options.len();
        missing.extend(
            options
                .into_iter()
                .filter(|option| !mentions(&docs, option))
                .map(|option| format!("{subcommand} {option}")),
        );
    }
    assert!(seen > 40, "the help texts were read ({seen} options)");
    assert!(missing.is_empty(), "undocumented options: {missing:?}");
}

#[test]
fn the_option_reader_finds_short_and_long_forms() {
    let help = "Options:\n  -j, --jobs <JOBS>  Evaluators\n      --max-memory <MAX_MEMORY>\n  -h, --help  Print help\n";
    assert_eq!(
        long_options(help).into_iter().collect::<Vec<_>>(),
        ["--jobs", "--max-memory"]
    );
    assert!(mentions("use `--jobs 8`", "--jobs"));
    assert!(!mentions("use `--jobs-max 8`", "--jobs"));
}
