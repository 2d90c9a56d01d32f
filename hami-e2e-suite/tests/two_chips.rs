//! Two chips of one vendor side by side: HAMi runs several Ascend chips at once (one `vnpus`
//! entry each), so a registry with the 910B3 (key `ascend`) and the 910B2 (key
//! `ascend-910b2`) runs every device and HAMi scenario for both, each under its own name.
//! `cargo test -p hami-e2e-suite --test two_chips` (the flags of the suite binary apply).

use hami_e2e_devices::{Ascend, AscendChip, DeviceRegistry};

fn main() -> std::process::ExitCode {
    let b2 = AscendChip::named("Ascend910B2").expect("the catalogue has the 910B2");
    let mut registry = DeviceRegistry::empty();
    registry
        .register(Ascend::default())
        .and_then(|r| r.register(Ascend::new(b2)))
        .expect("two Ascend chips register side by side");
    hami_e2e_suite::Suite::new().registry(registry).main()
}
