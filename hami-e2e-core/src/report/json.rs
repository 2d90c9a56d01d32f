use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::event::{Event, RunSummary};
use crate::report::Reporter;

/// Writes every event as one JSON object per line (`--json PATH`), then the summary as a
/// last line with `"event": "summary"`.
pub struct JsonReporter {
    path: PathBuf,
    out: BufWriter<File>,
    error: Option<std::io::Error>,
}

impl JsonReporter {
    /// Creates (truncates) the file.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] when the file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                what: "JSON report",
                path: path.clone(),
                source,
            })?;
        }
        let file = File::create(&path).map_err(|source| Error::Write {
            what: "JSON report",
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
            error: None,
        })
    }

    fn write_line(&mut self, value: &impl serde::Serialize) {
        if self.error.is_some() {
            return;
        }
        let r = serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::other)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = r {
            self.error = Some(e);
        }
    }
}

impl Reporter for JsonReporter {
    fn on_event(&mut self, event: &Event) {
        self.write_line(event);
    }

    fn finish(&mut self, summary: &RunSummary) -> Result<()> {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            event: &'static str,
            #[serde(flatten)]
            summary: &'a RunSummary,
        }
        self.write_line(&Line {
            event: "summary",
            summary,
        });
        let flushed = self.out.flush();
        match self.error.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(source) => Err(Error::Write {
                what: "JSON report",
                path: self.path.clone(),
                source,
            }),
        }
    }
}
