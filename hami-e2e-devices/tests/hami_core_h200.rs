//! The NVIDIA memory verdict on real HAMi-core outputs from an H200 (`fixtures/hami-core-h200`,
//! captured with `CUDA_DEVICE_MEMORY_LIMIT=3000m`): the builds that hold the limit are proven,
//! the Release build that only reports it is caught, and `memory.total` alone proves nothing.

use hami_e2e_devices::nvidia_probe::{MemoryVerdict, memory_verdict, parse_probe};
use hami_e2e_devices::nvidia_smi::{QUERY_FIELDS, parse_query_gpu};

const GRANT: u64 = 3000;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/hami-core-h200/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn verdict(files: &[&str]) -> MemoryVerdict {
    let text: String = files.iter().map(|f| fixture(f) + "\n").collect();
    memory_verdict(&parse_probe(&text), GRANT)
}

#[test]
fn the_runtime_api_probe_proves_the_limit() {
    assert_eq!(
        verdict(&["cudamalloc-over-limit.txt"]),
        MemoryVerdict::Holds {
            total_mib: 3000,
            under_mib: 2000,
            refused_mib: 2000
        }
    );
}

#[test]
fn the_driver_api_probe_proves_the_limit_and_reads_hami_core() {
    let report = parse_probe(&fixture("cumemalloc-over-limit.txt"));
    assert!(report.hami_core);
    assert_eq!(report.hami_core_oom, vec![(4_194_304_000, 3_145_728_000)]);
    assert_eq!(
        memory_verdict(&report, GRANT),
        MemoryVerdict::Holds {
            total_mib: 3000,
            under_mib: 2000,
            refused_mib: 2000
        }
    );
}

#[test]
fn pytorch_out_of_memory_proves_the_limit() {
    let v = verdict(&["torch-oom-over-limit.txt", "torch-oom-over-limit.stderr"]);
    assert!(
        matches!(
            v,
            MemoryVerdict::Holds {
                total_mib: 3000,
                ..
            }
        ),
        "{v:?}"
    );
}

#[test]
fn the_release_build_that_only_reports_the_limit_is_caught() {
    let v = verdict(&["release-build-torch-4000-allowed.txt"]);
    match v {
        MemoryVerdict::NotEnforced { reason } => {
            assert!(
                reason.contains("4000 MiB") && reason.contains("3000 MiB"),
                "{reason}"
            );
        }
        other => panic!("the broken build passed: {other:?}"),
    }
    // Its nvidia-smi shows the grant while the process holds 4000 MiB: by itself that
    // proves nothing either way.
    let query = parse_query_gpu(
        &fixture("release-build-query-holding-4000.csv"),
        QUERY_FIELDS,
    )
    .unwrap();
    assert_eq!(query[0].memory_total_mib, Some(3000));
    assert!(matches!(
        verdict(&["release-build-query-holding-4000.csv"]),
        MemoryVerdict::Unproven { .. }
    ));
}

#[test]
fn memory_total_alone_is_not_proof() {
    for file in [
        "query-limited-idle.csv",
        "query-limited-holding-2000.csv",
        "nvidia-smi-limited-idle.txt",
        "nvidia-smi-limited-idle.stderr",
        "nvidia-smi-limited-holding-2000.txt",
    ] {
        let v = verdict(&[file]);
        assert!(matches!(v, MemoryVerdict::Unproven { .. }), "{file}: {v:?}");
    }
    let query = parse_query_gpu(&fixture("query-limited-idle.csv"), QUERY_FIELDS).unwrap();
    assert_eq!(query[0].memory_total_mib, Some(3000));
}

#[test]
fn a_grant_other_than_the_limit_is_not_enforced() {
    // The same working build, judged against a grant of 4000 MiB: the container is shown
    // 3000 MiB, which is not what was granted.
    let v = memory_verdict(&parse_probe(&fixture("cudamalloc-over-limit.txt")), 4000);
    assert!(matches!(v, MemoryVerdict::NotEnforced { .. }), "{v:?}");
}

/// Our own probe (`MEMORY_PROBE`) on the H200, under HAMi-core's Debug and Release builds
/// and without it (`fixtures/hami-core-h200-probe`).
fn probe_fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/hami-core-h200-probe/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn our_probe_on_the_h200_proves_the_working_build_and_catches_the_broken_one() {
    let (under, over) = hami_e2e_devices::nvidia_probe::probe_sizes(GRANT);
    assert_eq!((under, over), (1500, 3000));
    let debug = parse_probe(&probe_fixture("probe-Debug.txt"));
    assert!(debug.hami_core);
    assert_eq!(
        memory_verdict(&debug, GRANT),
        MemoryVerdict::Holds {
            total_mib: 3000,
            under_mib: 1500,
            refused_mib: 3000
        }
    );
    for file in ["probe-Release.txt", "probe-none.txt"] {
        let v = memory_verdict(&parse_probe(&probe_fixture(file)), GRANT);
        assert!(
            matches!(&v, MemoryVerdict::NotEnforced { reason } if reason.contains("4500 MiB")),
            "{file}: {v:?}"
        );
    }
    // The broken build's nvidia-smi shows exactly what the working one's does.
    for file in ["query-Debug.csv", "query-Release.csv"] {
        let q = parse_query_gpu(&probe_fixture(file), QUERY_FIELDS).unwrap();
        assert_eq!(q[0].memory_total_mib, Some(3000), "{file}");
    }
}

#[test]
fn the_probe_command_carries_the_probe_and_its_sizes() {
    let cmd = hami_e2e_devices::nvidia_probe::memory_probe_command(4000);
    assert_eq!(cmd[0], "python3");
    assert_eq!(cmd[2], hami_e2e_devices::nvidia_probe::MEMORY_PROBE);
    assert_eq!(&cmd[3..], ["2000", "4000"]);
}

#[test]
fn the_nvidia_backend_checks_its_limit_probe() {
    use hami_e2e_devices::{ContainerDevice, DeviceBackend, Nvidia};
    let nv = Nvidia::default();
    let granted = [ContainerDevice::new("GPU-0", "NVIDIA", GRANT, 30)];
    let cmd = nv.limit_probe_command(&granted).unwrap();
    assert_eq!(&cmd[3..], ["1500", "3000"]);
    nv.check_limit_probe(&probe_fixture("probe-Debug.txt"), &granted)
        .unwrap();
    let e = nv
        .check_limit_probe(&probe_fixture("probe-Release.txt"), &granted)
        .unwrap_err()
        .to_string();
    assert!(e.contains("GPU-0: the memory limit does not hold"), "{e}");
    let e = nv
        .check_limit_probe(&fixture("query-limited-idle.csv"), &granted)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not proven"), "{e}");
    assert!(nv.limit_probe_command(&[]).is_none());
}

#[test]
fn the_core_limit_is_reported_as_measured_on_the_h200() {
    use hami_e2e_devices::nvidia_probe::core_report;
    let none = probe_fixture("core-none.txt");
    for (file, grant) in [
        ("core-30.txt", 30),
        ("core-10.txt", 10),
        ("core-30-force.txt", 30),
    ] {
        let r = core_report(grant, &probe_fixture(file), &none).unwrap();
        assert!(r.ratio > 0.95, "{file}: {r}");
        assert!(!r.throttled(), "{file}: {r}");
        assert!(r.to_string().contains("did not lower"), "{file}: {r}");
    }
    // A limit that took effect would be reported as such.
    let r = core_report(30, "matmul TFLOP/s 200.0 over 8.0s", &none).unwrap();
    assert!(r.throttled(), "{r}");
    assert!(core_report(30, "no rate here", &none).is_none());
}
