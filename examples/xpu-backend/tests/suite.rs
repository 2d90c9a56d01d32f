//! The suite with this crate's backend registered next to the built-in ones, run like HAMi's
//! own suite: `cargo test -p xpu-backend --test suite` (a local cluster when no KUBECONFIG is
//! given). Only the scenarios labelled `xpu` run unless a label filter is given.

use clap::Parser;
use hami_e2e_suite::{Suite, SuiteArgs};
use xpu_backend::Xpu;

fn main() -> std::process::ExitCode {
    if hami_e2e_suite::supervise_if_asked() {
        return std::process::ExitCode::SUCCESS;
    }
    let mut args = SuiteArgs::parse();
    if args.core.label_filter.is_none() {
        args.core.label_filter = Some("xpu".into());
    }
    let suite = match Suite::new().backend(Xpu::default()) {
        Ok(suite) => suite,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    suite.main_with_args(args)
}
