//! The .drv parser against derivations written by the real Nix, compared field by field
//! with Nix's own reading of the same file (`nix show-derivation`).

use srcgrab_formats::aterm;
use std::process::Command;

fn nix(args: &[&str]) -> String {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .output()
        .expect("nix runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn instantiate(expr: &str) -> String {
    let out = Command::new("nix-instantiate")
        .args(["--expr", expr])
        .output()
        .expect("nix-instantiate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn parses_drvs_written_by_nix_exactly_as_nix_reads_them() {
    let odd = r#"quote \" backslash \\ newline \n tab \t cr \r dollar \${x} unicode ü ☃ end"#;
    let expr = format!(
        r#"let
          dep = derivation {{ name = "dep"; system = "x86_64-linux"; builder = "/bin/sh"; outputs = [ "out" "dev" ]; }};
          src = derivation {{ name = "src.tar.gz"; system = "x86_64-linux"; builder = "/bin/sh";
            outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; outputHashMode = "recursive"; urls = [ "http://a/1" "http://b/2" ]; }};
        in derivation {{ name = "odd"; system = "aarch64-linux"; builder = "/bin/sh";
          args = [ "-c" "echo ${{dep.dev}} ${{src}}" ./aterm_real_nix.rs ];
          odd = "{odd}"; empty = ""; yes = true; no = false; }}"#
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    std::env::set_current_dir(&dir).unwrap();
    let drv_path = instantiate(&expr);
    let parsed = aterm::parse(&std::fs::read(&drv_path).unwrap()).unwrap();
    let shown: serde_json::Value =
        serde_json::from_str(&nix(&["show-derivation", &drv_path])).unwrap();
    let nix_view = &shown[&drv_path];

    assert_eq!(parsed.system, nix_view["system"]);
    assert_eq!(parsed.builder, nix_view["builder"]);
    assert_eq!(
        parsed.args,
        serde_json::from_value::<Vec<String>>(nix_view["args"].clone()).unwrap()
    );
    let env: std::collections::BTreeMap<String, String> =
        serde_json::from_value(nix_view["env"].clone()).unwrap();
    assert_eq!(parsed.env, env);
    assert!(parsed.env["odd"]
        .contains("quote \" backslash \\ newline \n tab \t cr \r dollar ${x} unicode ü ☃"));
    assert_eq!(parsed.env["yes"], "1");
    assert_eq!(parsed.env["no"], "");
    let srcs: Vec<String> = serde_json::from_value(nix_view["inputSrcs"].clone()).unwrap();
    assert_eq!(parsed.input_srcs, srcs);
    let inputs: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_value(nix_view["inputDrvs"].clone()).unwrap();
    assert_eq!(parsed.input_drvs, inputs);
    assert_eq!(parsed.input_drvs.len(), 2);
    assert!(parsed.fixed_output().is_none());

    let (src_drv, _) = parsed
        .input_drvs
        .iter()
        .find(|(path, _)| path.ends_with("-src.tar.gz.drv"))
        .unwrap();
    let src = aterm::parse(&std::fs::read(src_drv).unwrap()).unwrap();
    let fixed = src.fixed_output().unwrap();
    let src_view = &serde_json::from_str::<serde_json::Value>(&nix(&["show-derivation", src_drv]))
        .unwrap()[src_drv];
    assert_eq!(fixed.hash_algo, "r:sha256");
    assert_eq!(fixed.hash_algo, src_view["outputs"]["out"]["hashAlgo"]);
    assert_eq!(fixed.hash, src_view["outputs"]["out"]["hash"]);
    assert_eq!(fixed.path, src_view["outputs"]["out"]["path"]);
    assert_eq!(
        fixed.hash,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(src.env["urls"], "http://a/1 http://b/2");
}
