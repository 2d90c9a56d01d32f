//! Parsers for `nvidia-smi` output, used to prove HAMi-core's limits from inside a container:
//! HAMi-core hooks NVML, so `memory.total` shows the granted `nvidia.com/gpumem`, not the
//! card's memory.
//!
//! ```
//! use hami_e2e_devices::nvidia_smi;
//!
//! let out = "0, GPU-64ab7cdd-05c5-74d9-5e71-0e1567ced421, NVIDIA H100 80GB HBM3, 3000, 0, 3000\n";
//! let gpus = nvidia_smi::parse_query_gpu(out, nvidia_smi::QUERY_FIELDS)?;
//! assert_eq!(gpus[0].memory_total_mib, Some(3000));
//! # Ok::<(), hami_e2e_devices::Error>(())
//! ```

use std::collections::BTreeMap;

use crate::error::{Error, Problem, Result};
use crate::scalar::{check_len, parse_number};

/// The fields [`query_gpu_command`] asks for, in order.
pub const QUERY_FIELDS: &[&str] = &[
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "memory.free",
];

/// `nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`.
pub fn query_gpu_command() -> Vec<String> {
    vec![
        "nvidia-smi".to_owned(),
        format!("--query-gpu={}", QUERY_FIELDS.join(",")),
        "--format=csv,noheader,nounits".to_owned(),
    ]
}

const QUERY_KEY: &str = "nvidia-smi --query-gpu";
const LIST_KEY: &str = "nvidia-smi -L";

/// One row of `nvidia-smi --query-gpu`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GpuInfo {
    /// `index`.
    pub index: Option<u32>,
    /// `uuid`.
    pub uuid: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `memory.total` in MiB.
    pub memory_total_mib: Option<u64>,
    /// `memory.used` in MiB.
    pub memory_used_mib: Option<u64>,
    /// `memory.free` in MiB.
    pub memory_free_mib: Option<u64>,
    /// Every other field queried, as text (`driver_version`, `utilization.gpu`).
    pub other: BTreeMap<String, String>,
}

/// Parses `nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`.
///
/// With a header line, the fields are read from it (units such as ` [MiB]` dropped) and
/// `fields` is ignored; without one, `fields` names the columns in order. Values may carry
/// units (`81559 MiB`, `0 %`); `[N/A]` and `N/A` become `None`.
///
/// # Errors
///
/// [`Error::Parse`] keyed `nvidia-smi --query-gpu` naming the line or value and its byte
/// offset: a row with the wrong number of cells, a number that is not one, empty output.
pub fn parse_query_gpu(output: &str, fields: &[&str]) -> Result<Vec<GpuInfo>> {
    check_len(QUERY_KEY, output)?;
    let mut lines = lines_with_offsets(output).filter(|(_, l)| !l.trim().is_empty());
    let Some((first_at, first)) = lines.next() else {
        return Err(Error::parse(QUERY_KEY, 0, output, Problem::Empty));
    };
    let first_cells: Vec<&str> = first.split(',').map(str::trim).collect();
    let header: Vec<String> = first_cells
        .iter()
        .map(|c| strip_bracket_unit(c).to_owned())
        .collect();
    let looks_like_header = header
        .iter()
        .any(|h| QUERY_FIELDS.contains(&h.as_str()) && h != "name" && h != "uuid")
        && first_cells
            .first()
            .is_none_or(|c| c.parse::<u64>().is_err());
    let (names, rows): (Vec<String>, Vec<(usize, &str)>) = if looks_like_header {
        (header, lines.collect())
    } else {
        if fields.is_empty() {
            return Err(Error::parse(
                QUERY_KEY,
                first_at,
                first,
                Problem::MissingField { field: "header" },
            ));
        }
        (
            fields.iter().map(|f| (*f).to_owned()).collect(),
            std::iter::once((first_at, first)).chain(lines).collect(),
        )
    };
    let mut gpus = Vec::with_capacity(rows.len());
    for (at, line) in rows {
        let cells: Vec<(usize, &str)> = cells_with_offsets(line, at);
        if cells.len() != names.len() {
            return Err(Error::parse(
                QUERY_KEY,
                at,
                line,
                Problem::FieldCount {
                    expected: "as many as the header",
                    found: cells.len(),
                },
            ));
        }
        let mut gpu = GpuInfo::default();
        for (name, (cell_at, cell)) in names.iter().zip(cells) {
            let value = strip_value_unit(cell);
            if value == "[N/A]" || value == "N/A" || value.is_empty() {
                continue;
            }
            let mib = |field| parse_number(QUERY_KEY, cell_at, value, field, u64::from(u32::MAX));
            match name.as_str() {
                "index" => gpu.index = Some(mib("index")? as u32),
                "uuid" | "gpu_uuid" => gpu.uuid = Some(value.to_owned()),
                "name" | "gpu_name" => gpu.name = Some(value.to_owned()),
                "memory.total" => gpu.memory_total_mib = Some(mib("memory.total")?),
                "memory.used" => gpu.memory_used_mib = Some(mib("memory.used")?),
                "memory.free" => gpu.memory_free_mib = Some(mib("memory.free")?),
                other => {
                    gpu.other.insert(other.to_owned(), value.to_owned());
                }
            }
        }
        gpus.push(gpu);
    }
    Ok(gpus)
}

/// One GPU of `nvidia-smi -L`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListedGpu {
    /// `GPU <index>:`.
    pub index: u32,
    /// The product name.
    pub name: String,
    /// `UUID: GPU-...`.
    pub uuid: String,
    /// UUIDs of its MIG devices (`MIG-...`), listed indented below it.
    pub mig_uuids: Vec<String>,
}

/// Parses `nvidia-smi -L`: `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)`, with MIG devices
/// indented below their GPU.
///
/// # Errors
///
/// [`Error::Parse`] keyed `nvidia-smi -L` naming the line and its byte offset.
pub fn parse_list(output: &str) -> Result<Vec<ListedGpu>> {
    check_len(LIST_KEY, output)?;
    let mut gpus: Vec<ListedGpu> = Vec::new();
    for (at, line) in lines_with_offsets(output) {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let uuid = trimmed
            .rfind("(UUID: ")
            .and_then(|p| {
                trimmed[p + 7..]
                    .strip_suffix(')')
                    .map(|u| (p, u.trim().to_owned()))
            })
            .filter(|(_, u)| !u.is_empty());
        let Some((uuid_at, uuid)) = uuid else {
            return Err(Error::parse(
                LIST_KEY,
                at,
                line,
                Problem::MissingField { field: "UUID" },
            ));
        };
        if trimmed.starts_with("MIG ") {
            match gpus.last_mut() {
                Some(gpu) => gpu.mig_uuids.push(uuid),
                None => {
                    return Err(Error::parse(
                        LIST_KEY,
                        at,
                        line,
                        Problem::Unknown {
                            what: "line",
                            expected: "a `GPU <n>:` line before MIG devices".into(),
                        },
                    ));
                }
            }
            continue;
        }
        let head = &trimmed[..uuid_at];
        let parsed = head.strip_prefix("GPU ").and_then(|rest| {
            let (idx, name) = rest.split_once(':')?;
            Some((idx, name.trim()))
        });
        let Some((idx, name)) = parsed else {
            return Err(Error::parse(
                LIST_KEY,
                at,
                line,
                Problem::Unknown {
                    what: "line",
                    expected: "`GPU <n>: <name> (UUID: <uuid>)`".into(),
                },
            ));
        };
        let index = parse_number(LIST_KEY, at, idx, "index", u64::from(u32::MAX))? as u32;
        gpus.push(ListedGpu {
            index,
            name: name.to_owned(),
            uuid,
            mig_uuids: Vec::new(),
        });
    }
    Ok(gpus)
}

fn lines_with_offsets(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    s.split_inclusive('\n').map(move |l| {
        let start = at;
        at += l.len();
        (start, l.trim_end_matches(['\n', '\r']))
    })
}

fn cells_with_offsets(line: &str, base: usize) -> Vec<(usize, &str)> {
    let mut at = base;
    line.split(',')
        .map(|c| {
            let start = at + (c.len() - c.trim_start().len());
            at += c.len() + 1;
            (start, c.trim())
        })
        .collect()
}

/// `memory.total [MiB]` → `memory.total`.
fn strip_bracket_unit(header: &str) -> &str {
    match header.find(" [") {
        Some(p) if header.ends_with(']') => &header[..p],
        _ => header,
    }
}

/// `81559 MiB` → `81559`, `0 %` → `0`; other values unchanged.
fn strip_value_unit(value: &str) -> &str {
    for unit in [" MiB", " %", " W", " MHz"] {
        if let Some(v) = value.strip_suffix(unit) {
            return v;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e = parse_query_gpu("0, GPU-a, T4, x, 0, 0\n", QUERY_FIELDS).unwrap_err();
        assert!(matches!(e, Error::Parse { position: 14, .. }), "{e:?}");
        assert!(parse_query_gpu("0, GPU-a\n", QUERY_FIELDS).is_err());
        assert!(parse_query_gpu("", QUERY_FIELDS).is_err());
        assert!(parse_query_gpu("0, GPU-a", &[]).is_err());
        assert!(parse_list("garbage\n").is_err());
        assert!(parse_list("  MIG 1g.5gb Device 0: (UUID: MIG-a)\n").is_err());
        assert!(parse_list("GPU x: T4 (UUID: GPU-a)\n").is_err());
    }

    #[test]
    fn not_available_values_are_none_and_mig_lines_attach() {
        let g = parse_query_gpu("0, GPU-a, T4, [N/A], 0, 0\n", QUERY_FIELDS).unwrap();
        assert_eq!(g[0].memory_total_mib, None);
        let l = parse_list(
            "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-a)\n  MIG 1g.5gb     Device  0: (UUID: MIG-b)\n",
        )
        .unwrap();
        assert_eq!(l[0].mig_uuids, vec!["MIG-b".to_owned()]);
        assert_eq!(l[0].name, "NVIDIA A100-SXM4-40GB");
    }
}
