//! Shows the `example.com/xpu` backend in a registry: what a fake XPU node carries and what
//! a pod asking for XPUs looks like. `cargo run -p xpu-backend`.

use hami_e2e_devices::{DeviceRegistry, DeviceRequest, FakeDevices, PodOptions};
use xpu_backend::Xpu;

fn main() -> Result<(), hami_e2e_devices::Error> {
    let mut registry = DeviceRegistry::builtin();
    registry.register(Xpu::default())?;
    println!("registered vendors: {}", registry.vendors().join(", "));

    let xpu = registry.get("xpu")?;
    let fake = xpu.fake_node(&FakeDevices::new("kwok-xpu-0", 2, "X1", 16384))?;
    for (key, value) in &fake.annotations {
        println!("node annotation {key}: {value}");
    }
    for (name, quantity) in &fake.capacity {
        println!("node capacity {name}: {}", quantity.0);
    }

    let request = DeviceRequest::devices(1).memory_mib(4096).cores(50);
    if let Some(limits) = xpu.container_resources(&request)?.limits {
        for (name, quantity) in limits {
            println!("container limit {name}: {}", quantity.0);
        }
    }
    for (key, value) in xpu.pod_annotations(&PodOptions::default().use_type("X1"))? {
        println!("pod annotation {key}: {value}");
    }
    Ok(())
}
