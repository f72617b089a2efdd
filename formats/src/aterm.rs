//! A pure parser for Nix's `.drv` files, which are ATerm text:
//! `Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])`.
//!
//! Reading `.drv` files directly is far faster than asking `nix show-derivation`, and it is
//! what lets the closure walk run in parallel without any evaluator.

use std::collections::BTreeMap;

/// One output of a derivation. For a fixed output, `hash_algo` is e.g. `sha256` (flat) or
/// `r:sha256` (recursive) and `hash` is the hex digest; both are empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvOutput {
    pub name: String,
    pub path: String,
    pub hash_algo: String,
    pub hash: String,
}

impl DrvOutput {
    pub fn is_fixed(&self) -> bool {
        !self.hash_algo.is_empty()
    }
}

/// A parsed `.drv` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    pub outputs: Vec<DrvOutput>,
    /// Input derivation paths and the outputs of each that are used.
    pub input_drvs: BTreeMap<String, Vec<String>>,
    pub input_srcs: Vec<String>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Derivation {
    /// The fixed output, when this is a fixed-output derivation (which has exactly one output).
    pub fn fixed_output(&self) -> Option<&DrvOutput> {
        match self.outputs.as_slice() {
            [only] if only.is_fixed() => Some(only),
            _ => None,
        }
    }

    pub fn env_str(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or("")
    }

    /// The `.drv` text Nix writes for this derivation (`Derivation::unparse`): what
    /// [`parse`] reads back unchanged, and byte-identical to Nix's own file.
    pub fn to_aterm(&self) -> String {
        let mut out = String::from("Derive(");
        list(&mut out, &self.outputs, |out, o| {
            out.push('(');
            strings(out, [&o.name, &o.path, &o.hash_algo, &o.hash]);
            out.push(')');
        });
        out.push(',');
        list(&mut out, &self.input_drvs, |out, (path, outputs)| {
            out.push('(');
            quoted(out, path);
            out.push(',');
            list(out, outputs, |out, o| quoted(out, o));
            out.push(')');
        });
        out.push(',');
        list(&mut out, &self.input_srcs, |out, s| quoted(out, s));
        out.push(',');
        strings(&mut out, [&self.system, &self.builder]);
        out.push(',');
        list(&mut out, &self.args, |out, a| quoted(out, a));
        out.push(',');
        list(&mut out, &self.env, |out, (key, value)| {
            out.push('(');
            strings(out, [key, value]);
            out.push(')');
        });
        out.push(')');
        out
    }
}

/// `[item,item,...]`
fn list<I: IntoIterator>(out: &mut String, items: I, mut item: impl FnMut(&mut String, I::Item)) {
    out.push('[');
    for (i, it) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item(out, it);
    }
    out.push(']');
}

/// Quoted strings separated by commas.
fn strings<'a>(out: &mut String, items: impl IntoIterator<Item = &'a String>) {
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quoted(out, s);
    }
}

/// A string as Nix quotes it: `"` and `\` escaped, newline, tab and return as `\n`, `\t`,
/// `\r`.
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
    out.push('"');
}

/// Malformed `.drv` text, with the byte offset where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed derivation at byte {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

/// Parses the text of a `.drv` file.
pub fn parse(text: &[u8]) -> Result<Derivation, ParseError> {
    let mut p = Parser { text, pos: 0 };
    p.literal(b"Derive(")?;
    let outputs = p.list(|p| {
        p.literal(b"(")?;
        let name = p.string()?;
        p.literal(b",")?;
        let path = p.string()?;
        p.literal(b",")?;
        let hash_algo = p.string()?;
        p.literal(b",")?;
        let hash = p.string()?;
        p.literal(b")")?;
        Ok(DrvOutput {
            name,
            path,
            hash_algo,
            hash,
        })
    })?;
    p.literal(b",")?;
    let input_drvs = p
        .list(|p| {
            p.literal(b"(")?;
            let path = p.string()?;
            p.literal(b",")?;
            let outputs = p.list(Parser::string)?;
            p.literal(b")")?;
            Ok((path, outputs))
        })?
        .into_iter()
        .collect();
    p.literal(b",")?;
    let input_srcs = p.list(Parser::string)?;
    p.literal(b",")?;
    let system = p.string()?;
    p.literal(b",")?;
    let builder = p.string()?;
    p.literal(b",")?;
    let args = p.list(Parser::string)?;
    p.literal(b",")?;
    let env = p
        .list(|p| {
            p.literal(b"(")?;
            let key = p.string()?;
            p.literal(b",")?;
            let value = p.string()?;
            p.literal(b")")?;
            Ok((key, value))
        })?
        .into_iter()
        .collect();
    p.literal(b")")?;
    if p.pos != text.len() {
        return Err(p.error("trailing data after the derivation"));
    }
    Ok(Derivation {
        outputs,
        input_drvs,
        input_srcs,
        system,
        builder,
        args,
        env,
    })
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            position: self.pos,
            message: message.into(),
        }
    }

    fn literal(&mut self, expected: &[u8]) -> Result<(), ParseError> {
        if self.text[self.pos..].starts_with(expected) {
            self.pos += expected.len();
            Ok(())
        } else {
            Err(self.error(format!("expected '{}'", String::from_utf8_lossy(expected))))
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// `[item,item,...]`
    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        self.literal(b"[")?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    /// A double-quoted string with Nix's escapes: `\n`, `\r`, `\t`, and `\c` for any other
    /// character `c` (which covers `\"` and `\\`). Bytes that are not UTF-8 are replaced,
    /// as no value srcgrab reads can hold them meaningfully.
    fn string(&mut self) -> Result<String, ParseError> {
        self.literal(b"\"")?;
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(self.error("unterminated escape"));
                    };
                    self.pos += 1;
                    bytes.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                other => bytes.push(other),
            }
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part_and_unescapes() {
        let text = br#"Derive([("out","/nix/store/aaa-x","r:sha256","00ff")],[("/nix/store/bbb-y.drv",["dev","out"])],["/nix/store/ccc-b.sh"],"x86_64-linux","/bin/sh",["-e","a\"b"],[("k","l1\nl2\ttab\rcr \\ back \q")])"#;
        let drv = parse(text).unwrap();
        assert_eq!(
            drv.fixed_output().unwrap(),
            &DrvOutput {
                name: "out".into(),
                path: "/nix/store/aaa-x".into(),
                hash_algo: "r:sha256".into(),
                hash: "00ff".into(),
            }
        );
        assert_eq!(
            drv.input_drvs["/nix/store/bbb-y.drv"],
            vec!["dev".to_string(), "out".into()]
        );
        assert_eq!(drv.input_srcs, vec!["/nix/store/ccc-b.sh".to_string()]);
        assert_eq!(drv.system, "x86_64-linux");
        assert_eq!(drv.builder, "/bin/sh");
        assert_eq!(drv.args, vec!["-e".to_string(), "a\"b".into()]);
        assert_eq!(drv.env_str("k"), "l1\nl2\ttab\rcr \\ back q");
        assert_eq!(drv.env_str("absent"), "");
    }

    #[test]
    fn empty_lists_and_non_fixed_outputs() {
        let drv =
            parse(br#"Derive([("out","/nix/store/a-x","","")],[],[],"s","b",[],[])"#).unwrap();
        assert!(drv.fixed_output().is_none());
        assert!(drv.input_drvs.is_empty() && drv.env.is_empty() && drv.args.is_empty());
    }

    #[test]
    fn malformed_input_reports_the_byte_position() {
        let cases: [(&[u8], usize); 5] = [
            (b"Drive(", 0),
            (
                br#"Derive([("out","/nix/store/a-x","","")],[],[],"s","b",[],[]"#,
                59,
            ),
            (br#"Derive([("out","/nix/store/a-x""#, 31),
            (br#"Derive([("out" "/p","","")],[],[],"s","b",[],[])"#, 14),
            (br#"Derive([],[],[],"s","b",[],[])x"#, 30),
        ];
        for (text, position) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(
                err.position,
                position,
                "{err} for {}",
                String::from_utf8_lossy(text)
            );
            assert!(err.to_string().contains(&format!("byte {position}")));
        }
        let err = parse(br#"Derive([("out","ab\"#).unwrap_err();
        assert_eq!(err.message, "unterminated escape");
    }
}
