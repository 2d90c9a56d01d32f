//! HAMi's scalar values as its Go code reads them: the length limit of an annotation value,
//! whole numbers as `strconv.ParseInt` reads them into `int32` fields, booleans as
//! `strconv.ParseBool` reads them, and Kubernetes quantities that must be whole numbers.
//!
//! The node and request types and every codec build on these, so they sit below all of them.

use crate::error::{Error, Problem, Result};

/// The longest value a decoder accepts: Kubernetes caps an object's annotations at 256 KiB in
/// total, so a longer one cannot come from a cluster.
pub const MAX_VALUE_LEN: usize = 256 * 1024;

/// The largest number HAMi stores in its Go `int32` fields.
pub const MAX_INT32: u64 = i32::MAX as u64;

/// Rejects values longer than [`MAX_VALUE_LEN`].
pub(crate) fn check_len(key: &str, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::parse(
            key,
            0,
            value,
            Problem::TooLarge {
                len: value.len(),
                max: MAX_VALUE_LEN,
            },
        ));
    }
    Ok(())
}

/// Parses a whole number in `0..=max` the way Go's `strconv.ParseInt` reads it (an optional
/// sign, decimal digits), with typed errors.
pub(crate) fn parse_number(
    key: &str,
    position: usize,
    text: &str,
    field: &'static str,
    max: u64,
) -> Result<u64> {
    let err = |problem| Err(Error::parse(key, position, text, problem));
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return err(Problem::NotANumber { field });
    }
    let negative = text.starts_with('-');
    match digits.parse::<u64>() {
        Ok(0) => Ok(0),
        Ok(_) if negative => err(Problem::Negative { field }),
        Ok(n) if n > max => err(Problem::Overflow { field, max }),
        Ok(n) => Ok(n),
        Err(_) if negative => err(Problem::Negative { field }),
        Err(_) => err(Problem::Overflow { field, max }),
    }
}

/// Parses a signed whole number in `i32`'s range (NUMA node ids can be `-1`).
pub(crate) fn parse_i32(
    key: &str,
    position: usize,
    text: &str,
    field: &'static str,
) -> Result<i32> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::parse(
            key,
            position,
            text,
            Problem::NotANumber { field },
        ));
    }
    text.parse::<i32>().map_err(|_| {
        Error::parse(
            key,
            position,
            text,
            Problem::Overflow {
                field,
                max: MAX_INT32,
            },
        )
    })
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(
    key: &str,
    position: usize,
    text: &str,
    field: &'static str,
) -> Result<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Error::parse(
            key,
            position,
            text,
            Problem::NotABool { field },
        )),
    }
}

/// Parses a Kubernetes quantity that must be a whole number (`8`, `4k`, `2Gi`).
///
/// # Errors
///
/// [`Error::Parse`] naming `key` for fractions, unknown suffixes, negatives and overflow.
pub fn parse_quantity(key: &str, text: &str) -> Result<u64> {
    check_len(key, text)?;
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(Error::parse(
                key,
                split,
                suffix,
                Problem::Unknown {
                    what: "quantity suffix",
                    expected: "a whole number with k, M, G, T, Ki, Mi, Gi or Ti".into(),
                },
            ));
        }
    };
    let n = parse_number(key, 0, digits, "quantity", u64::MAX)?;
    n.checked_mul(multiplier).ok_or_else(|| {
        Error::parse(
            key,
            0,
            text,
            Problem::Overflow {
                field: "quantity",
                max: u64::MAX,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("r", "8").unwrap(), 8);
        assert_eq!(parse_quantity("r", "2Ki").unwrap(), 2048);
        assert_eq!(parse_quantity("r", "3k").unwrap(), 3000);
        assert!(parse_quantity("r", "1.5").is_err());
        assert!(parse_quantity("r", "-1").is_err());
        assert!(parse_quantity("r", "").is_err());
        assert!(parse_quantity("r", "99999999999999Ti").is_err());
    }
}
