//! Child processes of the local cluster: each leads its own process group, dies with the
//! test process (`PR_SET_PDEATHSIG`), writes to a log file, and is stopped by pid with
//! SIGTERM, then SIGKILL.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hami_e2e_core::admission::process_start_time;

use crate::error::{Error, Result};
use crate::toolkit::host::process_is_alive;

/// A component of the local cluster, running or stopped.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns every child from one thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Tokio's blocking threads come and go, so forking from them would kill components of a
/// cluster that is still in use; this thread never exits.
fn spawn_on_keeper(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<std::sync::Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("hami-e2e-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the hami-e2e-spawner thread");
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Puts the child in its own process group (so a terminal's Ctrl-C reaches the test
/// process, which then stops the cluster in order) and makes it die with its parent.
fn prepare(cmd: &mut Command) {
    cmd.process_group(0);
    let parent = std::process::id();
    #[expect(
        unsafe_code,
        reason = "pre_exec runs between fork and exec; prctl and getppid are async-signal-safe"
    )]
    // SAFETY: the closure calls only prctl and getppid, which are async-signal-safe, and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the process group led by `pid`.
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
    // SAFETY: kill takes plain integers; a stale pid at worst yields ESRCH.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Stops the process group of `pid` (SIGKILL) if `pid` is still the process that started at
/// `start`. Returns whether it was.
pub(crate) fn kill_if_same(pid: u32, start: u64) -> bool {
    if process_start_time(pid) != Some(start) || !process_is_alive(pid) {
        return false;
    }
    signal_group(pid, libc::SIGKILL);
    true
}

/// The last `lines` lines of a log file.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Process {
    /// Starts `binary args...`, appending its output to `log`.
    pub(crate) fn spawn(
        name: impl Into<String>,
        binary: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Result<Self> {
        let mut p = Process {
            name: name.into(),
            binary: binary.to_path_buf(),
            args,
            env,
            log,
            child: None,
        };
        p.start()?;
        Ok(p)
    }

    /// Starts the process again (after [`stop`](Self::stop)). The calling thread becomes
    /// its parent for `PR_SET_PDEATHSIG`: call it from a thread that lives as long as the
    /// cluster (a runtime worker), never from a blocking-pool thread, which idles out.
    pub(crate) fn start(&mut self) -> Result<()> {
        let io_err = |source| Error::Io {
            action: "open log",
            path: self.log.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_err)?;
        let err = file.try_clone().map_err(io_err)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        prepare(&mut cmd);
        let child = spawn_on_keeper(cmd).map_err(|source| Error::Spawn {
            component: self.name.clone(),
            binary: self.binary.clone(),
            source,
        })?;
        tracing::debug!(component = %self.name, pid = child.id(), "started");
        self.child = Some(child);
        Ok(())
    }

    /// The pid, while running.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Err` with the log's tail if the process has exited.
    pub(crate) fn check_alive(&mut self, when: &str) -> Result<()> {
        let exited = match &mut self.child {
            Some(child) => child.try_wait().ok().flatten(),
            None => {
                return Err(self.exited("not running", when));
            }
        };
        if let Some(status) = exited {
            self.child = None;
            return Err(self.exited(&status.to_string(), when));
        }
        Ok(())
    }

    fn exited(&self, status: &str, when: &str) -> Error {
        Error::ComponentExited {
            component: self.name.clone(),
            status: status.to_string(),
            when: when.to_string(),
            log: self.log.clone(),
            log_tail: log_tail(&self.log, 20),
        }
    }

    /// SIGTERM to its process group, SIGKILL after `grace`; reaps the child.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if !matches!(child.try_wait(), Ok(Some(_))) {
            signal_group(pid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Whatever is left of the group (the leader, or anything it started).
        signal_group(pid, libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        tracing::debug!(component = %self.name, pid, "stopped");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
