//! The labels and annotations hami-e2e puts on what it creates, in one place: every
//! cleanup (the namespace teardown, the leak check, the reaper, the sweep) selects by them
//! and never touches anything without them.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use kube::api::ObjectMeta;

/// Label naming the run that created an object.
pub const RUN_LABEL: &str = "hami-e2e.io/run";
/// Label naming the scenario (its slug) that created an object.
pub const SCENARIO_LABEL: &str = "hami-e2e.io/scenario";
/// `app.kubernetes.io/managed-by`, set to [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on what hami-e2e creates.
pub const MANAGED_BY: &str = "hami-e2e";
/// Annotation of a kept namespace: until when (RFC 3339) the sweeper must spare it.
pub const KEPT_UNTIL_ANNOTATION: &str = "hami-e2e.io/kept-until";

/// Whether an object is kept on purpose at `now` (its [`KEPT_UNTIL_ANNOTATION`] is later).
pub(crate) fn is_kept(meta: &ObjectMeta, now: k8s_openapi::jiff::Timestamp) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(KEPT_UNTIL_ANNOTATION))
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .is_some_and(|t| t > now)
}

/// A label value (at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends)
/// for any text; long texts are cut and end with a hash of the whole, so two long scenario
/// names stay apart.
///
/// ```
/// use hami_e2e_k8s::label_value;
///
/// assert_eq!(label_value("nvidia::allocation::single"), "nvidia-allocation-single");
/// let long = label_value(&"a::".repeat(40));
/// assert!(long.len() <= 63);
/// assert_ne!(long, label_value(&"a::".repeat(41)));
/// ```
pub fn label_value(text: &str) -> String {
    let slug = hami_e2e_core::slug(text);
    if slug.len() <= 63 {
        return slug;
    }
    let hash = format!("{:08x}", fnv(text.as_bytes()) as u32);
    format!("{}-{hash}", slug[..54].trim_end_matches('-'))
}

/// The name of a scenario's namespace: `hami-e2e-<slug>-<suffix>`, at most 63 characters.
///
/// ```
/// let name = hami_e2e_k8s::namespace_name("nvidia::allocation::single_device", "x7k2q");
/// assert_eq!(name, "hami-e2e-nvidia-allocation-single-device-x7k2q");
/// let long = hami_e2e_k8s::namespace_name(&"very-long-scenario-name::".repeat(9), "x7k2q");
/// assert!(long.len() <= 63 && long.ends_with("-x7k2q"));
/// ```
pub fn namespace_name(scenario: &str, suffix: &str) -> String {
    const PREFIX: &str = "hami-e2e-";
    let slug = hami_e2e_core::slug(scenario);
    let room = (63 - PREFIX.len() - 1).saturating_sub(suffix.len());
    let mut slug = slug.chars().take(room).collect::<String>();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        format!("{PREFIX}{suffix}")
    } else {
        format!("{PREFIX}{slug}-{suffix}")
    }
}

/// Five random characters of `[a-z0-9]`, from the standard library's random hasher keys.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The labels hami-e2e puts on what a scenario creates.
pub fn ownership_labels(run_id: &str, scenario: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN_LABEL.to_string(), label_value(run_id)),
        (SCENARIO_LABEL.to_string(), label_value(scenario)),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for scenario in [
            "a",
            "nvidia::allocation::single_device",
            &"x".repeat(200),
            "---",
            "UPPER::Case::Name",
            &format!("{}::b", "a-".repeat(40)),
        ] {
            let name = namespace_name(scenario, &random_suffix());
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
        }
    }

    #[test]
    fn suffixes_differ() {
        let a: std::collections::BTreeSet<String> = (0..100).map(|_| random_suffix()).collect();
        assert!(a.len() > 95, "{a:?}");
    }

    #[test]
    fn label_values_are_valid() {
        for text in ["run-1", &"y".repeat(100), "a::b", "20261125-143708-ab12"] {
            let v = label_value(text);
            assert!(v.len() <= 63);
            assert!(v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()));
            assert!(v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()));
        }
    }
}
