//! Values of command-line options that are not plain numbers or paths: byte sizes, rates
//! and `--rewrite` rules. One unit rule for every size and rate, as docs/fetch.md states:
//! `K`, `M`, `G`, `T` (also written `KiB`, `MiB`, …) are powers of 1024, `KB`, `MB`, `GB`,
//! `TB` powers of 1000, case ignored; a bare number is bytes.

use srcgrab_fetcher::net::Rewrite;

/// Bytes per unit, by the rule above.
fn unit_bytes(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    })
}

/// A positive number of bytes: digits (with an optional fraction, `1.5G`) and a unit.
fn parse_bytes(text: &str) -> Option<u64> {
    let body = text.trim();
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let multiplier = unit_bytes(unit.trim())?;
    let bytes = match number.split_once('.') {
        None => number.parse::<u64>().ok()?.checked_mul(multiplier)?,
        Some(_) => {
            let value = number.parse::<f64>().ok()? * multiplier as f64;
            (value < u64::MAX as f64).then_some(value as u64)?
        }
    };
    (bytes > 0).then_some(bytes)
}

/// A size such as `4G`, `8MiB`, `500KB` or `1000000`, in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_bytes(text).ok_or_else(|| {
        format!("'{text}' is not a size (e.g. 4G or 8MiB = 1024-based, 500KB = 1000-based, 100000)")
    })
}

/// A rate such as `2MiB/s`, `500K`, `10MB/s` or `1000000`, in bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    parse_bytes(text.trim().trim_end_matches("/s")).ok_or_else(|| {
        format!("'{text}' is not a rate (e.g. 2MiB/s = 1024-based, 500KB/s = 1000-based, 100000)")
    })
}

/// A `--rewrite FROM=TO` rule.
pub fn parse_rewrite(text: &str) -> Result<Rewrite, String> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() => Ok(Rewrite {
            from: from.to_string(),
            to: to.to_string(),
        }),
        _ => Err(format!("'{text}' is not a rewrite rule FROM=TO")),
    }
}

/// A public key as Nix's `trusted-public-keys` writes it (`name:base64`).
pub fn parse_public_key(text: &str) -> Result<srcgrab_formats::signature::PublicKey, String> {
    srcgrab_formats::signature::PublicKey::parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units_are_1024_based_and_decimal_ones_1000_based() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("4M"), parse_size("4MiB"));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("10mb"), Ok(10_000_000));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn refuses_what_is_not_a_positive_size() {
        for bad in [
            "lots",
            "4X",
            "",
            "0",
            "0K",
            "-1",
            "1..2M",
            "99999999999999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_take_an_optional_per_second() {
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("500KB/s"), Ok(500_000));
        assert_eq!(parse_rate("500K"), Ok(500 << 10));
        assert_eq!(parse_rate("100000"), Ok(100_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("3 parsecs").is_err());
        assert!(parse_size("8MiB/s").is_err());
    }

    #[test]
    fn rewrite_rules_need_a_prefix() {
        assert_eq!(
            parse_rewrite("https://a/=http://b/"),
            Ok(Rewrite {
                from: "https://a/".into(),
                to: "http://b/".into()
            })
        );
        assert!(parse_rewrite("=x").is_err());
        assert!(parse_rewrite("nothing").is_err());
    }
}
