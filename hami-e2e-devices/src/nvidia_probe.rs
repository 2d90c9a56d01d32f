//! Proving an NVIDIA memory limit inside a container: an allocation under the grant that
//! succeeds **and** one over it that is refused, with the memory the container is shown.
//!
//! Reading `memory.total` alone proves nothing: a HAMi-core build that does not enforce
//! the limit (built with `CMAKE_BUILD_TYPE=Release`, which hides its hooks) still shows the
//! grant there while a process takes more. [`memory_probe_command`] runs [`MEMORY_PROBE`]
//! (Python, `ctypes` on the driver's `libcuda.so.1`, which HAMi-core hooks) in the
//! container; [`parse_probe`] reads its output, and also what the CUDA runtime
//! (`cudaMalloc`), PyTorch (`CUDA out of memory ...`) and HAMi-core itself (its
//! `[HAMI-core ...]` lines on stderr) print; [`memory_verdict`] says whether the limit was
//! proven.
//!
//! ```
//! use hami_e2e_devices::nvidia_probe::{memory_verdict, parse_probe, MemoryVerdict};
//!
//! let held = parse_probe("cuMemAlloc 1500: CUDA_SUCCESS; another 3000: CUDA_ERROR_OUT_OF_MEMORY\ncuMemGetInfo free 982 MiB total 3000 MiB\n");
//! assert_eq!(memory_verdict(&held, 3000), MemoryVerdict::Holds { total_mib: 3000, under_mib: 1500, refused_mib: 3000 });
//! let broken = parse_probe("cuMemAlloc 1500: CUDA_SUCCESS; another 3000: CUDA_SUCCESS\n");
//! assert!(matches!(memory_verdict(&broken, 3000), MemoryVerdict::NotEnforced { .. }));
//! ```

/// The probe, a Python 3 program using only `ctypes` and the driver API: it allocates
/// `argv[1]` MiB, then `argv[2]` MiB more, and prints each result and what
/// `cuMemGetInfo` reports, as
/// `cuMemAlloc <a>: <CUDA_RESULT>; another <b>: <CUDA_RESULT>` and
/// `cuMemGetInfo free <f> MiB total <t> MiB`.
pub const MEMORY_PROBE: &str = r#"import ctypes, sys
a, b = int(sys.argv[1]), int(sys.argv[2])
cuda = ctypes.CDLL("libcuda.so.1")
def name(r):
    s = ctypes.c_char_p()
    cuda.cuGetErrorName(r, ctypes.byref(s))
    return s.value.decode() if s.value else "CUresult %d" % r
def check(what, r):
    if r != 0:
        print("%s: %s" % (what, name(r)))
        sys.exit(3)
check("cuInit", cuda.cuInit(0))
dev = ctypes.c_int()
check("cuDeviceGet", cuda.cuDeviceGet(ctypes.byref(dev), 0))
ctx = ctypes.c_void_p()
check("cuDevicePrimaryCtxRetain", cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev))
check("cuCtxSetCurrent", cuda.cuCtxSetCurrent(ctx))
p, q = ctypes.c_uint64(), ctypes.c_uint64()
r1 = cuda.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(a << 20))
r2 = cuda.cuMemAlloc_v2(ctypes.byref(q), ctypes.c_size_t(b << 20))
print("cuMemAlloc %d: %s; another %d: %s" % (a, name(r1), b, name(r2)))
free, total = ctypes.c_size_t(), ctypes.c_size_t()
check("cuMemGetInfo", cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)))
print("cuMemGetInfo free %d MiB total %d MiB" % (free.value >> 20, total.value >> 20))
"#;

/// The allocations the probe makes for a grant of `granted_mib`: half of it (room is left
/// for the CUDA context, about 500 MiB on an H200, which HAMi-core counts), then the whole
/// grant more, which cannot fit.
pub fn probe_sizes(granted_mib: u64) -> (u64, u64) {
    (granted_mib / 2, granted_mib)
}

/// The command that runs [`MEMORY_PROBE`] for a grant of `granted_mib` (`python3 -c ...`);
/// the container's image needs `python3` (the NVIDIA container runtime mounts the driver).
pub fn memory_probe_command(granted_mib: u64) -> Vec<String> {
    let (under, over) = probe_sizes(granted_mib);
    vec![
        "python3".to_owned(),
        "-c".to_owned(),
        MEMORY_PROBE.to_owned(),
        under.to_string(),
        over.to_string(),
    ]
}

/// One allocation a probe reported.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Allocation {
    /// Its size in MiB, where the output says it.
    pub mib: Option<f64>,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// The line it was read from.
    pub line: String,
}

/// What a probe's output (stdout and stderr) says.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The device memory the process is shown, in MiB (`cuMemGetInfo`, `cudaMemGetInfo`,
    /// PyTorch's "total capacity", `mem_get_info`).
    pub total_mib: Option<f64>,
    /// The allocations, in order.
    pub allocations: Vec<Allocation>,
    /// HAMi-core said it initialised (`[HAMI-core Msg(...)]: Initialized`).
    pub hami_core: bool,
    /// HAMi-core's refusals: `(bytes the process would hold, its limit in bytes)`.
    pub hami_core_oom: Vec<(u64, u64)>,
}

fn number_before<'a>(text: &'a str, unit: &str) -> Option<(f64, &'a str)> {
    let at = text.find(unit)?;
    let head = text[..at].trim_end();
    // After the last character that is not part of the number (which may be several bytes).
    let start = head
        .char_indices()
        .rfind(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    head[start..]
        .parse()
        .ok()
        .map(|v| (v, &text[at + unit.len()..]))
}

fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = text[text.find(key)? + key.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn gib_to_mib(v: f64) -> f64 {
    v * 1024.0
}

/// Reads a probe's output; lines it does not know are left out.
pub fn parse_probe(output: &str) -> ProbeReport {
    let mut r = ProbeReport::default();
    for line in output.lines().map(str::trim) {
        let alloc = |mib: Option<f64>, ok: bool| Allocation {
            mib,
            succeeded: ok,
            line: line.to_owned(),
        };
        if line.starts_with("[HAMI-core") {
            if line.ends_with("Initialized") {
                r.hami_core = true;
            }
            if let Some(i) = line.find(" OOM ") {
                let mut parts = line[i + 5..].split('/').map(str::trim);
                if let (Some(Ok(used)), Some(Ok(limit))) = (
                    parts.next().map(str::parse::<u64>),
                    parts.next().map(str::parse::<u64>),
                ) {
                    r.hami_core_oom.push((used, limit));
                }
            }
        } else if let Some(rest) = line.strip_prefix("cuMemAlloc ") {
            // `cuMemAlloc 2000: CUDA_SUCCESS; another 2000: CUDA_ERROR_OUT_OF_MEMORY`
            for part in rest.split(';') {
                let part = part.trim().trim_start_matches("another ").trim();
                if let Some((size, result)) = part.split_once(':') {
                    r.allocations.push(alloc(
                        size.trim().parse().ok(),
                        result.trim() == "CUDA_SUCCESS",
                    ));
                }
            }
        } else if let Some(rest) = line
            .strip_prefix("cudaMalloc ")
            .or_else(|| line.strip_prefix("alloc "))
        {
            // `cudaMalloc another 2000 MiB: out of memory`, `alloc 2000 MiB: ok`
            if let Some((size, result)) = rest.split_once(':') {
                let result = result.trim();
                r.allocations.push(alloc(
                    number_before(size, "MiB").map(|(v, _)| v),
                    result == "no error" || result == "ok",
                ));
            }
        } else if line.starts_with("cuMemGetInfo") || line.starts_with("cudaMemGetInfo") {
            r.total_mib = number_after(line, "total");
        } else if line.starts_with("mem_get_info") {
            r.total_mib = number_after(line, "total_mib");
        } else if line.starts_with("CUDA out of memory") {
            // PyTorch: `Tried to allocate 1.95 GiB. GPU 0 has a total capacity of 2.93 GiB
            // ... Of the allocated memory 1.95 GiB is allocated by PyTorch`
            if let Some(v) = number_after(line, "Of the allocated memory") {
                r.allocations.push(alloc(Some(gib_to_mib(v)), true));
            }
            r.allocations.push(alloc(
                number_after(line, "Tried to allocate").map(gib_to_mib),
                false,
            ));
            r.total_mib = number_after(line, "total capacity of").map(gib_to_mib);
        }
    }
    r
}

/// Whether a probe proved the memory limit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MemoryVerdict {
    /// Proven: the process is shown the grant, an allocation under it succeeded and one that
    /// would go over it was refused.
    Holds {
        /// The memory shown, MiB.
        total_mib: u64,
        /// The allocation that succeeded, MiB.
        under_mib: u64,
        /// The allocation that was refused, MiB.
        refused_mib: u64,
    },
    /// Disproven: the process holds more than the grant, or is shown other memory.
    NotEnforced {
        /// What was seen.
        reason: String,
    },
    /// Neither: the output lacks an allocation under or over the grant.
    Unproven {
        /// What is missing.
        reason: String,
    },
}

/// The verdict on `report` for a grant of `granted_mib` (the memory shown may differ from
/// the grant by 1 %, for PyTorch's GiB with two decimals).
pub fn memory_verdict(report: &ProbeReport, granted_mib: u64) -> MemoryVerdict {
    let grant = granted_mib as f64;
    let held: f64 = report
        .allocations
        .iter()
        .filter(|a| a.succeeded)
        .filter_map(|a| a.mib)
        .sum();
    if held > grant {
        return MemoryVerdict::NotEnforced {
            reason: format!(
                "allocations of {held:.0} MiB in all succeeded under a grant of {granted_mib} MiB"
            ),
        };
    }
    if let Some(total) = report.total_mib
        && (total - grant).abs() > grant / 100.0
    {
        return MemoryVerdict::NotEnforced {
            reason: format!(
                "the process is shown {total:.0} MiB of device memory, not the grant of {granted_mib} MiB"
            ),
        };
    }
    let Some(under) = report
        .allocations
        .iter()
        .find(|a| a.succeeded && a.mib.is_some())
    else {
        return MemoryVerdict::Unproven {
            reason: "no allocation under the grant succeeded (or none was tried)".into(),
        };
    };
    let Some(refused) = report.allocations.iter().find(|a| !a.succeeded) else {
        return MemoryVerdict::Unproven {
            reason: format!(
                "no allocation over the grant of {granted_mib} MiB was refused (or none was tried)"
            ),
        };
    };
    if let Some(mib) = refused.mib
        && held + mib <= grant
    {
        return MemoryVerdict::NotEnforced {
            reason: format!(
                "an allocation of {mib:.0} MiB was refused though {held:.0} MiB held and it fit the grant of {granted_mib} MiB"
            ),
        };
    }
    let Some(total) = report.total_mib else {
        return MemoryVerdict::Unproven {
            reason: "the output does not say how much device memory the process is shown".into(),
        };
    };
    let under_mib = under.mib.unwrap_or_default();
    MemoryVerdict::Holds {
        total_mib: total.round() as u64,
        under_mib: under_mib.round() as u64,
        refused_mib: refused.mib.unwrap_or_default().round() as u64,
    }
}

/// The core probe, a Python 3 program with PyTorch: bf16 8192×8192 matrix products on GPU 0
/// for `argv[1]` seconds, printing `matmul TFLOP/s <rate> over <seconds>s`. Run once under
/// the limit and once without, it gives the ratio [`core_report`] reports.
pub const CORE_PROBE: &str = r#"import sys, time, torch
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
torch.cuda.synchronize()
count, start = 0, time.time()
while time.time() - start < seconds:
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    count += 10
elapsed = time.time() - start
print("matmul TFLOP/s %.1f over %.1fs" % (2 * n**3 * count / elapsed / 1e12, elapsed))
"#;

/// The rate a core probe printed (`matmul TFLOP/s 658.3 over 8.0s`), in TFLOP/s.
///
/// ```
/// assert_eq!(hami_e2e_devices::nvidia_probe::parse_core_probe("x\nmatmul TFLOP/s 658.3 over 8.0s\n"), Some(658.3));
/// ```
pub fn parse_core_probe(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("matmul TFLOP/s "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// What a core limit did to a single process's throughput: reported, never asserted, since
/// HAMi-core's core limit did not lower one process's throughput on an H200.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CoreReport {
    /// The grant, % of the device (`nvidia.com/gpucores`).
    pub granted_percent: u32,
    /// Throughput under the limit, TFLOP/s.
    pub limited: f64,
    /// Throughput without it, TFLOP/s.
    pub unlimited: f64,
    /// `limited / unlimited`.
    pub ratio: f64,
}

impl CoreReport {
    /// Whether the throughput fell to within 20 % above the grant's share (`ratio <=
    /// grant × 1.2`).
    pub fn throttled(&self) -> bool {
        self.ratio <= f64::from(self.granted_percent) / 100.0 * 1.2
    }
}

impl std::fmt::Display for CoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "granted {} % of the cores: {:.1} TFLOP/s against {:.1} without the limit ({:.0} %){}",
            self.granted_percent,
            self.limited,
            self.unlimited,
            self.ratio * 100.0,
            if self.throttled() {
                ""
            } else {
                "; the limit did not lower a single process's throughput"
            }
        )
    }
}

/// The report for a grant of `granted_percent` from the two probes' outputs, or `None` when
/// either lacks a rate.
///
/// ```
/// use hami_e2e_devices::nvidia_probe::core_report;
///
/// let r = core_report(30, "matmul TFLOP/s 651.0 over 8.0s", "matmul TFLOP/s 655.0 over 8.0s").unwrap();
/// assert!(!r.throttled());
/// assert_eq!(r.to_string(), "granted 30 % of the cores: 651.0 TFLOP/s against 655.0 without the limit (99 %); the limit did not lower a single process's throughput");
/// ```
pub fn core_report(granted_percent: u32, limited: &str, unlimited: &str) -> Option<CoreReport> {
    let (l, u) = (parse_core_probe(limited)?, parse_core_probe(unlimited)?);
    (u > 0.0).then(|| CoreReport {
        granted_percent,
        limited: l,
        unlimited: u,
        ratio: l / u,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_after_a_character_of_several_bytes_is_read_not_a_panic() {
        // Found by fuzzing: the number's start was taken one byte after a two-byte `ò`.
        let report = parse_probe("cudaMalloc ò2000 MiB: out of memory\nalloc ·8 MiB: ok");
        let sizes: Vec<Option<f64>> = report.allocations.iter().map(|a| a.mib).collect();
        assert_eq!(sizes, [Some(2000.0), Some(8.0)]);
        assert!(!report.allocations[0].succeeded && report.allocations[1].succeeded);
    }
}
