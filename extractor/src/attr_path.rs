//! Attribute paths as users write them (`python3Packages.requests`, `a."b.c"`).

/// Splits `a.b."c.d"` into its names. Quoted names may hold dots; `\"` and `\\` escape.
pub fn parse(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    let mut quoted_name = false;
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if current.is_empty() && !quoted_name {
                    return Err(format!("empty attribute name in '{text}'"));
                }
                names.push(std::mem::take(&mut current));
                quoted_name = false;
            }
            '"' if current.is_empty() && !quoted_name => {
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => current.extend(chars.next()),
                        Some(c) => current.push(c),
                        None => return Err(format!("unterminated quote in '{text}'")),
                    }
                }
                quoted_name = true;
            }
            c if quoted_name => {
                return Err(format!("unexpected '{c}' after a quoted name in '{text}'"))
            }
            c => current.push(c),
        }
    }
    if current.is_empty() && !quoted_name {
        if names.is_empty() {
            return Ok(names);
        }
        return Err(format!("empty attribute name in '{text}'"));
    }
    names.push(current);
    Ok(names)
}

/// Joins names with dots, quoting those that would not read back as one plain name.
pub fn format(names: &[String]) -> String {
    names
        .iter()
        .map(|name| {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''));
            if plain {
                name.clone()
            } else {
                format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_plain_and_quoted_names() {
        for (text, names) in [
            ("hello", vec!["hello"]),
            (
                "python3Packages.requests",
                vec!["python3Packages", "requests"],
            ),
            (r#"a."b.c".d"#, vec!["a", "b.c", "d"]),
            (r#""q\"uote""#, vec!["q\"uote"]),
            ("", vec![]),
        ] {
            let names: Vec<String> = names.into_iter().map(String::from).collect();
            assert_eq!(parse(text).unwrap(), names, "{text}");
            assert_eq!(format(&names), text);
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for text in ["a..b", "a.", ".a", r#""open"#, r#""a"b"#] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
