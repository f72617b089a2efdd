//! Every line srcgrab prints about an item is one line: names, URLs and reasons come from
//! input (a manifest, a server, a bundle), and a newline or NUL in one must not split a
//! report line or hide what follows it. [`say!`] and [`tell!`] print through [`escape`].

use std::borrow::Cow;

/// `text` with its control characters written as escapes (`\n`, `\r`, `\t`, `\0`,
/// `\u{1b}`), everything else as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `println!` of one escaped line.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::one_line::escape(&format!($($arg)*)))
    };
}

/// `eprintln!` of one escaped line.
macro_rules! tell {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::one_line::escape(&format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
        assert_eq!(
            escape("a\nb\0c\td\re\u{1b}[31m"),
            "a\\nb\\0c\\td\\re\\u{1b}[31m"
        );
    }
}
