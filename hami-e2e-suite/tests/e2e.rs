//! The suite binary: `cargo test -p hami-e2e-suite` (or `cargo nextest run -p hami-e2e-suite`).
//! Flags: `cargo test -p hami-e2e-suite --test e2e -- --label-filter smoke`, or the
//! `HAMI_E2E_*` variables; `--kubeconfig`/`KUBECONFIG` selects a real cluster.

fn main() -> std::process::ExitCode {
    hami_e2e_suite::main()
}
