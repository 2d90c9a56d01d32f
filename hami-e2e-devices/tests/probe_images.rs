//! The real-device CI job runs the NVIDIA probe in exactly the images the crate lists.

#[test]
fn the_real_device_workflow_runs_every_probe_image() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../.github/workflows/hami.yml");
    let text = std::fs::read_to_string(path).expect("the workflow is there");
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "probe-image:")
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- "))
        .collect();
    assert_eq!(listed, hami_e2e_devices::NVIDIA_PROBE_IMAGES, "{path}");
}
