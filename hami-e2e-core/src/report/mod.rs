//! Reporters turn the run's events and final summary into output: live human lines
//! ([`HumanReporter`]), JUnit XML ([`JunitReporter`]), JSON lines ([`JsonReporter`]) and a
//! self-contained HTML timeline ([`HtmlReporter`]).
//!
//! They are separate consumers of one event stream (as in nextest), so adding one (an HTML
//! timeline, a dashboard push) touches nothing else.

mod html;
mod human;
mod json;
mod junit;

pub use html::{HtmlReporter, render as render_html};
pub use human::HumanReporter;
pub use json::JsonReporter;
pub use junit::JunitReporter;

use crate::error::Result;
use crate::event::{Event, RunSummary};

/// A consumer of a run's events.
///
/// Both hooks do nothing by default, so a reporter implements only what it needs.
pub trait Reporter: Send {
    /// Called for every event, in order, as it happens.
    fn on_event(&mut self, event: &Event) {
        let _ = event;
    }

    /// Called once at the end with the summary ordered by scenario name.
    ///
    /// # Errors
    ///
    /// The report cannot be written.
    fn finish(&mut self, summary: &RunSummary) -> Result<()> {
        let _ = summary;
        Ok(())
    }
}
