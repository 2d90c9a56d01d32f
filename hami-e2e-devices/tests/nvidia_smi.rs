//! The NVIDIA verification parsers on real `nvidia-smi` output (H100 80GB HBM3, driver
//! 580.159.04, captured without HAMi; see `fixtures/nvidia-smi/`).

use hami_e2e_devices::nvidia_smi::{self, QUERY_FIELDS};
use hami_e2e_devices::{ContainerDevice, DeviceBackend, Error, Nvidia};

const UUID: &str = "GPU-64ab7cdd-05c5-74d9-5e71-0e1567ced421";

#[test]
fn query_gpu_with_header_and_units() {
    let out = include_str!("fixtures/nvidia-smi/query-gpu.csv");
    let gpus = nvidia_smi::parse_query_gpu(out, &[]).unwrap();
    assert_eq!(gpus.len(), 1);
    let g = &gpus[0];
    assert_eq!(g.index, Some(0));
    assert_eq!(g.uuid.as_deref(), Some(UUID));
    assert_eq!(g.name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(g.memory_total_mib, Some(81559));
    assert_eq!(g.memory_used_mib, Some(0));
    assert_eq!(g.memory_free_mib, Some(81079));
    assert_eq!(g.other["utilization.gpu"], "0");
    assert_eq!(g.other["driver_version"], "580.159.04");
    assert_eq!(g.other["compute_cap"], "9.0");
}

#[test]
fn query_gpu_busy_and_noheader_nounits() {
    let busy = nvidia_smi::parse_query_gpu(
        include_str!("fixtures/nvidia-smi/query-gpu-busy.csv"),
        QUERY_FIELDS,
    )
    .unwrap();
    assert_eq!(busy[0].memory_used_mib, Some(3527));
    let plain = nvidia_smi::parse_query_gpu(
        include_str!("fixtures/nvidia-smi/query-gpu-noheader-nounits.csv"),
        QUERY_FIELDS,
    )
    .unwrap();
    assert_eq!(plain[0].memory_total_mib, Some(81559));
    assert_eq!(plain[0].uuid.as_deref(), Some(UUID));
}

#[test]
fn list() {
    let gpus =
        nvidia_smi::parse_list(include_str!("fixtures/nvidia-smi/nvidia-smi-L.txt")).unwrap();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].index, 0);
    assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
    assert_eq!(gpus[0].uuid, UUID);
}

#[test]
fn verification_proves_or_refutes_the_limit() {
    let nv = Nvidia::default();
    assert_eq!(
        nv.verify_command().unwrap().join(" "),
        "nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free --format=csv,noheader,nounits"
    );
    assert_eq!(
        nv.test_image(),
        Some(hami_e2e_devices::DEFAULT_NVIDIA_IMAGE)
    );
    assert_eq!(
        Nvidia::default().with_test_image("my/cuda:1").test_image(),
        Some("my/cuda:1")
    );
    // Under HAMi-core a 3000 MiB grant shows as memory.total = 3000.
    let limited = format!("0, {UUID}, NVIDIA H100 80GB HBM3, 3000, 0, 3000\n");
    let granted = [ContainerDevice::new(UUID, "NVIDIA", 3000, 30)];
    nv.verify_output(&limited, &granted).unwrap();
    // Without HAMi-core the card's full memory shows: the limit is not enforced.
    let unlimited = include_str!("fixtures/nvidia-smi/query-gpu-noheader-nounits.csv");
    let err = nv.verify_output(unlimited, &granted).unwrap_err();
    assert!(matches!(err, Error::VerificationMismatch { .. }));
    assert!(
        err.to_string()
            .contains("shows memory.total 81559 MiB, granted 3000 MiB"),
        "{err}"
    );
    let err = nv.verify_output(&limited, &[]).unwrap_err();
    assert!(
        err.to_string().contains("sees 1 GPU(s), 0 were granted"),
        "{err}"
    );
}
