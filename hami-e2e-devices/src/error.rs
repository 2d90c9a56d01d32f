//! Errors of `hami-e2e-devices`.
//!
//! Annotations and command output come from clusters we do not control, so every parse error
//! names where the bad text was (the annotation key or the command), the offending fragment,
//! and its byte offset in the value, and says what was wrong with it as a [`Problem`].

use std::fmt;

/// Errors of `hami-e2e-devices`.
///
/// None is transient but [`Error::Cluster`] (the fake device agent talking to a cluster):
/// the rest are about data, and retrying does not change data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value (an annotation, a capacity, a command's output) could not be parsed.
    #[error("cannot parse `{key}` at byte {position} (`{fragment}`): {problem}")]
    Parse {
        /// The annotation key, capacity resource name, or command whose value it was.
        key: String,
        /// Byte offset of the fragment in the value.
        position: usize,
        /// The offending fragment, shortened to at most 80 characters.
        fragment: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A node or pod lacks an annotation or capacity a backend needs.
    #[error("`{object}` has no `{key}`")]
    Missing {
        /// The object (`node/gpu-1`, `pod/ns/p`).
        object: String,
        /// The annotation key or resource name.
        key: String,
    },
    /// A node's device data (its register annotation) does not parse for a vendor.
    #[error("node `{node}`: {vendor}'s device registration is broken: {cause}")]
    BrokenNode {
        /// The node.
        node: String,
        /// The vendor whose data it is.
        vendor: String,
        /// What does not parse (naming the annotation); in the message, so not a source.
        cause: Box<Error>,
    },
    /// A fake node's capacity does not give the vendor's count resource as it must.
    #[error("{vendor}'s fake node `{node}` gives {} in its capacity; it must count the devices ({devices}) or the devices × the split count ({shares})", match found { Some(v) => format!("`{resource}` = {v}"), None => format!("no `{resource}`") })]
    FakeCapacity {
        /// The vendor.
        vendor: String,
        /// The fake node.
        node: String,
        /// The count resource.
        resource: String,
        /// What the capacity gives, if anything.
        found: Option<String>,
        /// The devices.
        devices: u64,
        /// The devices × the split count.
        shares: u64,
    },
    /// No backend is registered under this vendor name or device type.
    #[error("no device backend named `{vendor}` is registered (known: {known})")]
    UnknownVendor {
        /// The name asked for.
        vendor: String,
        /// The registered vendor names, comma-separated.
        known: String,
    },
    /// A backend is not fit to register.
    #[error(
        "cannot register the device backend of vendor `{vendor}`, device type `{device_type}`: {problem}"
    )]
    InvalidBackend {
        /// Its vendor name.
        vendor: String,
        /// Its device type.
        device_type: String,
        /// What is wrong.
        problem: String,
    },
    /// Two backends have the same [key](crate::DeviceBackend::key).
    #[error(
        "two device backends have the key `{key}`: {first} (registered first) and {second} (vendor/device type); a vendor with several chips gives each other chip a key of its own (DeviceBackend::key)"
    )]
    DuplicateBackend {
        /// The key both have.
        key: String,
        /// The one registered first, `vendor/device type`.
        first: String,
        /// The one refused, `vendor/device type`.
        second: String,
    },
    /// A request that the vendor (or HAMi's webhook for it) would reject.
    #[error("invalid {vendor} request: {reason}")]
    InvalidRequest {
        /// The backend's vendor name.
        vendor: String,
        /// Why, in HAMi's terms.
        reason: String,
    },
    /// What HAMi allocated does not match what was asked for.
    #[error("{vendor} allocation does not match the request: {}", problems.join("; "))]
    AllocationMismatch {
        /// The backend's vendor name.
        vendor: String,
        /// One line per difference, naming the container.
        problems: Vec<String>,
    },
    /// What a container observes does not prove the granted limit.
    #[error("{vendor} verification failed: {}", problems.join("; "))]
    VerificationMismatch {
        /// The backend's vendor name.
        vendor: String,
        /// One line per difference.
        problems: Vec<String>,
    },
    /// The backend cannot do this (a vendor without in-container verification, a request
    /// kind its resources cannot express).
    #[error("the {vendor} backend does not support {what}")]
    Unsupported {
        /// The backend's vendor name.
        vendor: String,
        /// What was asked of it.
        what: String,
    },
    /// HAMi's `device-config.yaml` is not valid YAML of the expected shape.
    #[error("cannot read HAMi's device config `{source_name}`")]
    DeviceConfig {
        /// Where it came from (a file name, or `inline`).
        source_name: String,
        /// The YAML error.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// The fake device agent could not read or change an object on the cluster.
    #[error("fake device agent: cannot {action} `{object}`: {message}")]
    Cluster {
        /// What it tried (`patch`, `get`).
        action: &'static str,
        /// The object (`node/gpu-1`, `pod/ns/p`).
        object: String,
        /// The API server's answer.
        message: String,
    },
    /// A `device-config.yaml` section is present but holds a value we cannot use.
    #[error("HAMi's device config has an invalid `{field}`: {reason}")]
    DeviceConfigField {
        /// The YAML path (`vnpus.configs[2].templates`).
        field: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl Error {
    /// `false` but for [`Error::Cluster`]: the other errors are about data, and retrying
    /// does not change data.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Cluster { .. })
    }

    /// The [`Problem`] of a [`Error::Parse`], for tests and matching.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Parse { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// Builds a [`Error::Parse`], shortening `fragment`.
    pub(crate) fn parse(
        key: impl Into<String>,
        position: usize,
        fragment: &str,
        problem: Problem,
    ) -> Self {
        Error::Parse {
            key: key.into(),
            position,
            fragment: shorten(fragment, 80),
            problem,
        }
    }
}

/// What is wrong with a parsed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The value is empty (or only whitespace) where something is required.
    Empty,
    /// The value is longer than any real annotation (Kubernetes caps all of a node's
    /// annotations at 256 KiB together).
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A record has the wrong number of fields.
    FieldCount {
        /// What the format allows (`4`, `7 or 9`).
        expected: &'static str,
        /// How many there were.
        found: usize,
    },
    /// A field that must be a number is not.
    NotANumber {
        /// The field's name.
        field: &'static str,
    },
    /// A field that must not be negative is.
    Negative {
        /// The field's name.
        field: &'static str,
    },
    /// A number does not fit the range HAMi uses for it (HAMi stores most as Go `int32`).
    Overflow {
        /// The field's name.
        field: &'static str,
        /// The largest accepted value.
        max: u64,
    },
    /// A field that must be `true` or `false` is not.
    NotABool {
        /// The field's name.
        field: &'static str,
    },
    /// A record names a device type or value this backend does not know.
    Unknown {
        /// What kind of thing (`device type`, `bind phase`).
        what: &'static str,
        /// What was accepted.
        expected: String,
    },
    /// Two records have the same device id.
    DuplicateId {
        /// The id.
        id: String,
    },
    /// A separator the format requires is missing.
    MissingSeparator {
        /// The separator.
        separator: &'static str,
    },
    /// A required field is missing.
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// The value is not valid JSON, or not JSON of the expected shape.
    InvalidJson {
        /// serde_json's message.
        message: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("the value is empty"),
            Problem::TooLarge { len, max } => {
                write!(
                    f,
                    "the value is {len} bytes long, more than the {max} accepted"
                )
            }
            Problem::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields, found {found}")
            }
            Problem::NotANumber { field } => write!(f, "{field} is not a whole number"),
            Problem::Negative { field } => write!(f, "{field} is negative"),
            Problem::Overflow { field, max } => write!(f, "{field} is larger than {max}"),
            Problem::NotABool { field } => write!(f, "{field} is neither `true` nor `false`"),
            Problem::Unknown { what, expected } => {
                write!(f, "unknown {what}, expected {expected}")
            }
            Problem::DuplicateId { id } => write!(f, "device id `{id}` appears twice"),
            Problem::MissingSeparator { separator } => write!(f, "missing `{separator}`"),
            Problem::MissingField { field } => write!(f, "missing field `{field}`"),
            Problem::InvalidJson { message } => write!(f, "invalid JSON: {message}"),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// At most `max` characters of `s`, with `…` when cut (never splits a character).
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_short_and_cuts_long_on_char_boundaries() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ééééé", 2), "éé…");
    }

    #[test]
    fn parse_error_names_key_fragment_and_position() {
        let e = Error::parse(
            "hami.io/node-dcu-register",
            12,
            "x",
            Problem::NotANumber { field: "count" },
        );
        assert_eq!(
            e.to_string(),
            "cannot parse `hami.io/node-dcu-register` at byte 12 (`x`): count is not a whole number"
        );
        assert!(!e.is_transient());
    }
}
