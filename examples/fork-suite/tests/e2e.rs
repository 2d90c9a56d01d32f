//! The fork's suite binary: `cargo test -p fork-suite --test e2e` (a local cluster unless
//! KUBECONFIG is set). By default it runs the fork's scenarios and the XPU device
//! scenarios: `--label-filter` (or `HAMI_E2E_LABEL_FILTER`) picks others, all of ours included.

use clap::Parser;
use hami_e2e_suite::SuiteArgs;

fn main() -> std::process::ExitCode {
    if hami_e2e_suite::supervise_if_asked() {
        return std::process::ExitCode::SUCCESS;
    }
    let mut args = SuiteArgs::parse();
    if args.core.label_filter.is_none() {
        args.core.label_filter = Some("fork || xpu".into());
    }
    fork_suite::suite().main_with_args(args)
}
