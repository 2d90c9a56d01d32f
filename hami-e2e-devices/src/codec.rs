//! HAMi's shared annotation encodings (`pkg/device/devices.go`), as pure functions.
//!
//! Backends (ours and vendors' own) build on these: the JSON node register most vendors use,
//! the legacy colon/comma node register (Hygon, and NVIDIA before HAMi v2.8), and the
//! per-container allocation value of `*-devices-to-allocate` / `*-devices-allocated`.
//!
//! Every decoder takes the annotation key only to name it in errors, never panics, and
//! rejects what HAMi would misread: wrong field counts, non-numbers, negative or overflowing
//! numbers (HAMi keeps them in Go `int32`), duplicate device ids, values over 256 KiB.
//!
//! ```
//! use hami_e2e_devices::codec;
//!
//! let value = ";GPU-a,NVIDIA,3000,30:GPU-b,NVIDIA,3000,30:;";
//! let containers = codec::decode_allocation("hami.io/vgpu-devices-allocated", value)?;
//! assert_eq!(containers.len(), 2);
//! assert!(containers[0].is_empty());
//! assert_eq!(containers[1][1].id, "GPU-b");
//! assert_eq!(codec::encode_allocation(&containers), value);
//! # Ok::<(), hami_e2e_devices::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::container::ContainerDevice;
use crate::error::{Error, Problem, Result};
use crate::node::NodeDevice;
pub use crate::scalar::{MAX_INT32, MAX_VALUE_LEN};
use crate::scalar::{check_len, parse_bool, parse_i32, parse_number};

/// Splits `s` on `sep`, yielding each piece with its byte offset in `s`, offset by `base`.
fn split_with_offsets<'a>(
    s: &'a str,
    sep: char,
    base: usize,
) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    let mut offset = base;
    s.split(sep).map(move |piece| {
        let at = offset;
        offset += piece.len() + sep.len_utf8();
        (at, piece)
    })
}

/// Fails on the second device with the same id.
fn check_unique<'a>(
    key: &str,
    seen: &mut BTreeSet<&'a str>,
    id: &'a str,
    position: usize,
    fragment: &str,
) -> Result<()> {
    if !seen.insert(id) {
        return Err(Error::parse(
            key,
            position,
            fragment,
            Problem::DuplicateId { id: id.to_owned() },
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Legacy colon/comma node register
// ---------------------------------------------------------------------------------------------

/// Decodes the legacy node register: devices joined by `:` (a trailing `:` is usual), each
/// `id,count,devmem,devcore,type,numa,health` (HAMi before v2.4) or the same plus
/// `,index,mode`. Seven-field devices get index 0 and mode `hami-core`, as HAMi reads them.
///
/// # Errors
///
/// [`Error::Parse`] naming `key`, the offending device or field and its byte offset.
pub fn decode_legacy_register(key: &str, value: &str) -> Result<Vec<NodeDevice>> {
    check_len(key, value)?;
    if value.trim().is_empty() {
        return Err(Error::parse(key, 0, value, Problem::Empty));
    }
    if !value.contains(':') {
        return Err(Error::parse(
            key,
            0,
            value,
            Problem::MissingSeparator { separator: ":" },
        ));
    }
    let mut devices = Vec::new();
    let mut seen = BTreeSet::new();
    for (at, record) in split_with_offsets(value, ':', 0) {
        if record.is_empty() {
            continue;
        }
        let fields: Vec<(usize, &str)> = split_with_offsets(record, ',', at).collect();
        if fields.len() != 7 && fields.len() != 9 {
            return Err(Error::parse(
                key,
                at,
                record,
                Problem::FieldCount {
                    expected: "7 or 9",
                    found: fields.len(),
                },
            ));
        }
        let (id_at, id) = fields[0];
        if id.is_empty() {
            return Err(Error::parse(
                key,
                id_at,
                record,
                Problem::MissingField { field: "id" },
            ));
        }
        check_unique(key, &mut seen, id, id_at, record)?;
        let num = |i: usize, field: &'static str| {
            let (p, t) = fields[i];
            parse_number(key, p, t, field, MAX_INT32)
        };
        let count = num(1, "count")? as u32;
        let memory_mib = num(2, "devmem")?;
        let cores = num(3, "devcore")? as u32;
        let device_type = fields[4].1.to_owned();
        let numa = parse_i32(key, fields[5].0, fields[5].1, "numa")?;
        let health = parse_bool(key, fields[6].0, fields[6].1, "health")?;
        let (index, mode) = if fields.len() == 9 {
            let (p, t) = fields[7];
            (
                parse_number(key, p, t, "index", u64::from(u32::MAX))? as u32,
                fields[8].1.to_owned(),
            )
        } else {
            (0, "hami-core".to_owned())
        };
        devices.push(NodeDevice {
            id: id.to_owned(),
            index,
            count,
            memory_mib,
            cores,
            device_type,
            numa,
            mode,
            health,
            extra: BTreeMap::new(),
        });
    }
    Ok(devices)
}

/// Encodes devices in the legacy 9-field register format (`EncodeNodeDevices`).
///
/// # Errors
///
/// [`Error::Parse`] (keyed `legacy register`) if an id, type or mode contains `,` or `:`,
/// which the format cannot carry.
pub fn encode_legacy_register(devices: &[NodeDevice]) -> Result<String> {
    let mut out = String::new();
    for d in devices {
        for (field, text) in [("id", &d.id), ("type", &d.device_type), ("mode", &d.mode)] {
            if let Some(p) = text.find([',', ':']) {
                return Err(Error::parse(
                    "legacy register",
                    p,
                    text,
                    Problem::Unknown {
                        what: "character",
                        expected: format!("a {field} without `,` or `:`"),
                    },
                ));
            }
        }
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}:",
            d.id, d.count, d.memory_mib, d.cores, d.device_type, d.numa, d.health, d.index, d.mode
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// JSON node register
// ---------------------------------------------------------------------------------------------

/// The keys of HAMi's `DeviceInfo` that [`NodeDevice`] has fields for; others go to `extra`.
const KNOWN_KEYS: [&str; 9] = [
    "id", "index", "count", "devmem", "devcore", "type", "numa", "mode", "health",
];

/// Decodes the JSON node register (`UnMarshalNodeDevices`): an array of objects with `id`,
/// `index`, `count`, `devmem`, `devcore`, `type`, `numa`, `mode`, `health`.
///
/// Keys match case-insensitively, as Go's `encoding/json` matches them: HAMi before v2.5
/// marshalled `DeviceInfo` without JSON tags (`"ID"`, `"Devmem"`), and its Ascend tests still
/// use that shape. Missing numbers are 0 and a missing `health` is `false` (the keys are
/// `omitempty`). Other keys (`migProfiles`, `custominfo`) are kept in [`NodeDevice::extra`].
///
/// # Errors
///
/// [`Error::Parse`] naming `key`, the offending entry (or JSON position) and its byte offset.
pub fn decode_json_register(key: &str, value: &str) -> Result<Vec<NodeDevice>> {
    check_len(key, value)?;
    if value.trim().is_empty() {
        return Err(Error::parse(key, 0, value, Problem::Empty));
    }
    let entries: Vec<&RawValue> = serde_json::from_str(value).map_err(|e| {
        let at = json_offset(value, e.line(), e.column());
        // A register in the colon format HAMi wrote before v2.8 (and Hygon's plugin writes).
        let hint = if !value.trim_start().starts_with('[') && decode_legacy_register(key, value).is_ok() {
            " (the value is in the older colon format, `id,count,devmem,devcore,type,numa,health:`, not JSON)"
        } else {
            ""
        };
        Error::parse(
            key,
            at,
            value.get(at..).unwrap_or(""),
            Problem::InvalidJson {
                message: format!("{e}{hint}"),
            },
        )
    })?;
    let mut devices = Vec::with_capacity(entries.len());
    let mut seen = BTreeSet::new();
    for raw in entries {
        let text = raw.get();
        let at = (text.as_ptr() as usize).saturating_sub(value.as_ptr() as usize);
        let device = decode_json_device(key, at, text)?;
        if !seen.insert(device.id.clone()) {
            return Err(Error::parse(
                key,
                at,
                text,
                Problem::DuplicateId { id: device.id },
            ));
        }
        devices.push(device);
    }
    Ok(devices)
}

/// Byte offset of serde_json's 1-based line and column.
fn json_offset(value: &str, line: usize, column: usize) -> usize {
    let line_start: usize = value
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let mut at = (line_start + column.saturating_sub(1)).min(value.len());
    while !value.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn decode_json_device(key: &str, at: usize, text: &str) -> Result<NodeDevice> {
    let object: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        Error::parse(
            key,
            at,
            text,
            Problem::InvalidJson {
                message: e.to_string(),
            },
        )
    })?;
    let mut known: BTreeMap<&'static str, Value> = BTreeMap::new();
    let mut extra = BTreeMap::new();
    for (k, v) in object {
        match KNOWN_KEYS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(&k))
        {
            Some(name) => {
                known.insert(name, v);
            }
            None => {
                extra.insert(k, v);
            }
        }
    }
    let fail = |problem| Error::parse(key, at, text, problem);
    let string = |field: &'static str| -> Result<String> {
        match known.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(fail(Problem::InvalidJson {
                message: format!("`{field}` is not a string"),
            })),
        }
    };
    let number = |field: &'static str, max: u64| -> Result<u64> {
        match known.get(field) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(v), _) if v <= max => Ok(v),
                (Some(_), _) => Err(fail(Problem::Overflow { field, max })),
                (None, Some(_)) => Err(fail(Problem::Negative { field })),
                (None, None) => Err(fail(Problem::NotANumber { field })),
            },
            Some(_) => Err(fail(Problem::NotANumber { field })),
        }
    };
    let id = string("id")?;
    if id.is_empty() {
        return Err(fail(Problem::MissingField { field: "id" }));
    }
    let numa = match known.get("numa") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => i32::try_from(v).map_err(|_| {
                fail(Problem::Overflow {
                    field: "numa",
                    max: MAX_INT32,
                })
            })?,
            None => {
                return Err(fail(if n.as_u64().is_some() {
                    Problem::Overflow {
                        field: "numa",
                        max: MAX_INT32,
                    }
                } else {
                    Problem::NotANumber { field: "numa" }
                }));
            }
        },
        Some(_) => return Err(fail(Problem::NotANumber { field: "numa" })),
    };
    let health = match known.get("health") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(fail(Problem::NotABool { field: "health" })),
    };
    Ok(NodeDevice {
        index: number("index", u64::from(u32::MAX))? as u32,
        count: number("count", MAX_INT32)? as u32,
        memory_mib: number("devmem", MAX_INT32)?,
        cores: number("devcore", MAX_INT32)? as u32,
        device_type: string("type")?,
        mode: string("mode")?,
        numa,
        health,
        id,
        extra,
    })
}

/// Encodes devices as the JSON node register. Unlike HAMi's `omitempty` output it writes
/// every key (`"index":0`, `"health":true`), as the NVIDIA device plugin does; HAMi reads both.
pub fn encode_json_register(devices: &[NodeDevice]) -> String {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        id: &'a str,
        index: u32,
        count: u32,
        devmem: u64,
        devcore: u32,
        #[serde(rename = "type")]
        device_type: &'a str,
        numa: i32,
        mode: &'a str,
        health: bool,
        #[serde(flatten)]
        extra: &'a BTreeMap<String, Value>,
    }
    let entries: Vec<Entry<'_>> = devices
        .iter()
        .map(|d| Entry {
            id: &d.id,
            index: d.index,
            count: d.count,
            devmem: d.memory_mib,
            devcore: d.cores,
            device_type: &d.device_type,
            numa: d.numa,
            mode: &d.mode,
            health: d.health,
            extra: &d.extra,
        })
        .collect();
    // Serializing plain strings, numbers and JSON values into a String cannot fail.
    serde_json::to_string(&entries).unwrap_or_else(|_| "[]".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Pod allocation value
// ---------------------------------------------------------------------------------------------

/// Decodes an allocation value (`EncodePodSingleDevice`): per container, devices as
/// `<id>,<type>,<memMiB>,<cores>:`, each container closed by `;`, init containers first.
/// `""` is no container; `";"` is one container without devices; the text after the last `;`
/// (normally empty) counts as one more container only if it is not empty.
///
/// # Errors
///
/// [`Error::Parse`] naming `key`, the offending device and its byte offset: a device without
/// exactly 4 fields, a non-number, a negative or overflowing memory or core value, an empty
/// id, the same id twice in one container.
pub fn decode_allocation(key: &str, value: &str) -> Result<Vec<Vec<ContainerDevice>>> {
    check_len(key, value)?;
    let mut containers = Vec::new();
    let pieces: Vec<(usize, &str)> = split_with_offsets(value, ';', 0).collect();
    let last = pieces.len().saturating_sub(1);
    for (i, (at, container)) in pieces.into_iter().enumerate() {
        if i == last && container.is_empty() {
            break;
        }
        containers.push(decode_container(key, at, container)?);
    }
    Ok(containers)
}

fn decode_container(key: &str, base: usize, value: &str) -> Result<Vec<ContainerDevice>> {
    let mut devices = Vec::new();
    let mut seen = BTreeSet::new();
    for (at, record) in split_with_offsets(value, ':', base) {
        if record.is_empty() {
            continue;
        }
        let fields: Vec<(usize, &str)> = split_with_offsets(record, ',', at).collect();
        if fields.len() != 4 {
            return Err(Error::parse(
                key,
                at,
                record,
                Problem::FieldCount {
                    expected: "4",
                    found: fields.len(),
                },
            ));
        }
        let (id_at, id) = fields[0];
        if id.is_empty() {
            return Err(Error::parse(
                key,
                id_at,
                record,
                Problem::MissingField { field: "id" },
            ));
        }
        check_unique(key, &mut seen, id, id_at, record)?;
        if fields[1].1.is_empty() {
            return Err(Error::parse(
                key,
                fields[1].0,
                record,
                Problem::MissingField { field: "type" },
            ));
        }
        devices.push(ContainerDevice {
            id: id.to_owned(),
            device_type: fields[1].1.to_owned(),
            memory_mib: parse_number(key, fields[2].0, fields[2].1, "memory", MAX_INT32)?,
            cores: parse_number(key, fields[3].0, fields[3].1, "cores", MAX_INT32)? as u32,
        });
    }
    Ok(devices)
}

/// Encodes containers' devices as HAMi writes them (init containers first).
pub fn encode_allocation(containers: &[Vec<ContainerDevice>]) -> String {
    let mut out = String::new();
    for container in containers {
        for d in container {
            out.push_str(&format!(
                "{},{},{},{}:",
                d.id, d.device_type, d.memory_mib, d.cores
            ));
        }
        out.push(';');
    }
    out
}

/// Decodes a comma-separated list (`nvidia.com/use-gputype: A100,V100`), trimming blanks and
/// dropping empty entries.
///
/// # Errors
///
/// [`Error::Parse`] when the value is over [`MAX_VALUE_LEN`].
pub fn decode_list(key: &str, value: &str) -> Result<Vec<String>> {
    check_len(key, value)?;
    Ok(value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DCU: &str = "hami.io/node-dcu-register";

    #[test]
    fn legacy_register_reference_example() {
        let v = "DCU-a1,4,65536,100,DCU-Z100,0,true,0,hami-core:DCU-a2,4,65536,100,DCU-Z100,0,true,1,hami-core:";
        let d = decode_legacy_register(DCU, v).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].id, "DCU-a2");
        assert_eq!(d[1].index, 1);
        assert_eq!(d[1].memory_mib, 65536);
        assert_eq!(d[1].device_type, "DCU-Z100");
        assert!(d[1].health);
        assert_eq!(encode_legacy_register(&d).unwrap(), v);
    }

    #[test]
    fn legacy_register_seven_fields_and_hami_test_values() {
        let d = decode_legacy_register(DCU, "GPU-0,10,15360,100,NVIDIA-Tesla T4,0,true:").unwrap();
        assert_eq!(d[0].mode, "hami-core");
        assert_eq!(d[0].index, 0);
        let d = decode_legacy_register(DCU, "test-0,1,1024,100,DCU,0,true,0,test:").unwrap();
        assert_eq!(d[0].mode, "test");
        assert!(decode_legacy_register(DCU, ":").unwrap().is_empty());
    }

    #[test]
    fn legacy_register_errors_name_fragment_and_position() {
        let e = decode_legacy_register(DCU, "test-0,1,1024,100,DCU:").unwrap_err();
        assert_eq!(
            e.problem(),
            Some(&Problem::FieldCount {
                expected: "7 or 9",
                found: 5
            })
        );
        let e = decode_legacy_register(DCU, "a,1,1,1,T,0,true:b,1,x,1,T,0,true:").unwrap_err();
        match e {
            Error::Parse {
                position, fragment, ..
            } => {
                assert_eq!(position, 21);
                assert_eq!(fragment, "x");
            }
            other => panic!("{other}"),
        }
        for (v, p) in [
            ("", Problem::Empty),
            (
                "a,1,1,1,T,0,true",
                Problem::MissingSeparator { separator: ":" },
            ),
            ("a,-1,1,1,T,0,true:", Problem::Negative { field: "count" }),
            (
                "a,1,99999999999,1,T,0,true:",
                Problem::Overflow {
                    field: "devmem",
                    max: MAX_INT32,
                },
            ),
            ("a,1,1,1,T,0,yes:", Problem::NotABool { field: "health" }),
            (
                "a,1,1,1,T,0,true:a,1,1,1,T,0,true:",
                Problem::DuplicateId { id: "a".into() },
            ),
        ] {
            assert_eq!(
                decode_legacy_register(DCU, v).unwrap_err().problem(),
                Some(&p),
                "{v}"
            );
        }
    }

    #[test]
    fn json_register_reference_example_and_capitalised_keys() {
        let v = r#"[{"id":"GPU-0","index":0,"count":10,"devmem":15360,"devcore":100,"type":"NVIDIA-Tesla T4","numa":0,"mode":"hami-core","health":true}]"#;
        let d = decode_json_register("hami.io/node-nvidia-register", v).unwrap();
        assert_eq!(d[0].count, 10);
        assert_eq!(d[0].device_type, "NVIDIA-Tesla T4");
        assert_eq!(encode_json_register(&d), v);
        let old = r#"[{"ID":"GPU-0","Count":4,"Devmem":8738,"Devcore":8,"Type":"huawei.com/Ascend910","Numa":0,"Health":true}]"#;
        let d = decode_json_register("hami.io/node-register-Ascend910A", old).unwrap();
        assert_eq!(d[0].memory_mib, 8738);
        assert_eq!(d[0].cores, 8);
        assert!(d[0].health);
    }

    #[test]
    fn json_register_keeps_unknown_keys_and_defaults_omitted_ones() {
        let v = r#"[{"id":"GPU-0","devmem":40960,"mode":"mig","migProfiles":[{"name":"1g.5gb"}]}]"#;
        let d = decode_json_register("k", v).unwrap();
        assert!(!d[0].health);
        assert_eq!(d[0].count, 0);
        assert!(d[0].extra.contains_key("migProfiles"));
    }

    #[test]
    fn json_register_keeps_long_floats_in_unknown_keys_exact() {
        // Found by the json_register fuzz target.
        let v = r#"[{"id":"a","x":873744444444444444444444444444444444444444444}]"#;
        let d = decode_json_register("k", v).unwrap();
        assert_eq!(
            decode_json_register("k", &encode_json_register(&d)).unwrap(),
            d
        );
    }

    #[test]
    fn json_register_errors() {
        let k = "hami.io/node-nvidia-register";
        let e = decode_json_register(k, r#"[{"id":"a","devmem":1},{"id":"b","devmem":-5}]"#)
            .unwrap_err();
        match &e {
            Error::Parse {
                position, problem, ..
            } => {
                assert_eq!(*position, 23);
                assert_eq!(*problem, Problem::Negative { field: "devmem" });
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(k));
        // The older colon format, given to the JSON parser: said so.
        let legacy = "GPU-0,10,15360,100,NVIDIA-Tesla T4,0,true:";
        let e = decode_json_register(k, legacy).unwrap_err().to_string();
        assert!(e.contains("in the older colon format"), "{e}");
        let e = decode_json_register(k, "nonsense").unwrap_err().to_string();
        assert!(!e.contains("colon format"), "{e}");
        for v in ["", "[", "{}", "null", r#"[{"id":1}]"#, "[1]"] {
            assert!(decode_json_register(k, v).is_err(), "{v}");
        }
        assert_eq!(
            decode_json_register(k, r#"[{"id":"a"},{"id":"a"}]"#)
                .unwrap_err()
                .problem(),
            Some(&Problem::DuplicateId { id: "a".into() })
        );
        assert_eq!(
            decode_json_register(k, r#"[{"id":"a","count":1.5}]"#)
                .unwrap_err()
                .problem(),
            Some(&Problem::NotANumber { field: "count" })
        );
        assert_eq!(
            decode_json_register(k, r#"[{"devmem":1}]"#)
                .unwrap_err()
                .problem(),
            Some(&Problem::MissingField { field: "id" })
        );
        let huge = format!("[{}]", " ".repeat(MAX_VALUE_LEN));
        assert!(matches!(
            decode_json_register(k, &huge).unwrap_err().problem(),
            Some(Problem::TooLarge { .. })
        ));
        let e = decode_json_register(k, "[\n{\"id\":\"a\"},\n  x]").unwrap_err();
        assert!(matches!(e, Error::Parse { position: 16, .. }), "{e:?}");
    }

    #[test]
    fn allocation_reference_examples() {
        let k = "hami.io/vgpu-devices-allocated";
        let c = decode_allocation(k, ";GPU-a,NVIDIA,3000,30:GPU-b,NVIDIA,3000,30:;").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1][0].memory_mib, 3000);
        assert_eq!(c[1][0].cores, 30);
        assert_eq!(decode_allocation(k, ";;").unwrap(), vec![vec![], vec![]]);
        assert_eq!(decode_allocation(k, "").unwrap(), Vec::<Vec<_>>::new());
        // HAMi's EncodeContainerDeviceType joins without a trailing `:`.
        let c = decode_allocation(k, "a,NVIDIA,1,2:b,NVIDIA,1,2").unwrap();
        assert_eq!(c[0].len(), 2);
    }

    #[test]
    fn allocation_errors() {
        let k = "hami.io/vgpu-devices-to-allocate";
        let e = decode_allocation(k, ";GPU-a,NVIDIA,3000:;").unwrap_err();
        match e {
            Error::Parse {
                position,
                fragment,
                problem,
                ..
            } => {
                assert_eq!(position, 1);
                assert_eq!(fragment, "GPU-a,NVIDIA,3000");
                assert_eq!(
                    problem,
                    Problem::FieldCount {
                        expected: "4",
                        found: 3
                    }
                );
            }
            other => panic!("{other}"),
        }
        for (v, p) in [
            ("a,NVIDIA,x,1:;", Problem::NotANumber { field: "memory" }),
            ("a,NVIDIA,1,-1:;", Problem::Negative { field: "cores" }),
            (",NVIDIA,1,1:;", Problem::MissingField { field: "id" }),
            ("a,,1,1:;", Problem::MissingField { field: "type" }),
            ("a,N,1,1:a,N,1,1:;", Problem::DuplicateId { id: "a".into() }),
            (
                "a,N,4294967296,1:;",
                Problem::Overflow {
                    field: "memory",
                    max: MAX_INT32,
                },
            ),
        ] {
            assert_eq!(
                decode_allocation(k, v).unwrap_err().problem(),
                Some(&p),
                "{v}"
            );
        }
    }

    #[test]
    fn numbers_follow_go_parse_int() {
        assert_eq!(parse_number("k", 0, "+5", "f", 10).unwrap(), 5);
        assert_eq!(parse_number("k", 0, "-0", "f", 10).unwrap(), 0);
        assert!(parse_number("k", 0, "11", "f", 10).is_err());
        assert!(parse_number("k", 0, " 1", "f", 10).is_err());
        assert!(parse_number("k", 0, "-", "f", 10).is_err());
        assert!(parse_number("k", 0, "-99999999999999999999999", "f", 10).is_err());
        assert_eq!(
            decode_list("k", " A100, ,V100 ").unwrap(),
            vec!["A100".to_owned(), "V100".to_owned()]
        );
    }
}
