//! Builds (or finds) the HAMi scheduler of the default release and helm through the same
//! code path the deployment takes, runs them, and checks the versions they report. Slow the
//! first time (minutes: Go builds), then served from the binary cache.
//!
//! The scheduler's other ways are tested with stand-ins made here: a tiny Go module at
//! HAMi's module path (standard library only, nothing downloaded) for a checkout
//! (`HAMI_E2E_HAMI_SOURCE`), shell scripts for a given binary and for a `go` that counts
//! its calls or fails like a module proxy refusing HAMi.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use hami_e2e_helm::Error;
use hami_e2e_helm::binaries::{
    self, BinarySource, FindSchedulerError, HAMI_SCHEDULER_ENV, HAMI_SOURCE_ENV, HAMI_VERSION_ENV,
    HELM_ENV, HamiCheckout, HamiRelease, SchedulerInputs, pinned_helm_version,
};
use hami_e2e_k8s::local::bincache::BinaryCache;

/// Runs `binary args`, asserts success, returns stdout and stderr together.
fn run(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{} {}` failed ({}): {text}",
        binary.display(),
        args.join(" "),
        out.status
    );
    text
}

#[tokio::test]
#[ignore = "needs HAMi's Go module, which the Go module proxy reachable here refuses (403); run with --ignored where it is served"]
async fn hami_scheduler_of_the_default_release_runs_and_reports_its_version() {
    let cache = BinaryCache::default();
    let release = HamiRelease::find(None).expect("default release");
    let scheduler = binaries::hami_scheduler(&cache, &release)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "HAMi scheduler {} ({}): {}",
        scheduler.version,
        scheduler.source,
        scheduler.path.display()
    );
    let version = run(&scheduler.path, &["version"]);
    let help = run(&scheduler.path, &["--help"]);
    assert!(help.contains("--device-config-file"), "{help}");
    if let BinarySource::Built { pin } = &scheduler.source {
        assert_eq!(pin, "hami-e2e-helm/src/go/hami-2.10");
        assert_eq!(scheduler.version, "v2.10.0");
        assert!(version.contains("v2.10.0"), "{version}");
        assert!(version.contains(&release.commit()[..12]), "{version}");
        assert_eq!(
            scheduler.path,
            cache.root().join("bin/hami-scheduler-v2.10.0/scheduler")
        );
    }
    let module = binaries::hami_module_dir(&cache, &release)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let chart = std::fs::read_to_string(module.join("charts/hami/Chart.yaml"))
        .expect("the module holds HAMi's chart");
    assert!(chart.contains("name: hami"), "{chart}");
    assert!(chart.contains("version: 2.10.0"), "{chart}");
}

#[tokio::test]
async fn helm_runs_and_reports_a_supported_version() {
    let cache = BinaryCache::default();
    let helm = binaries::helm(&cache)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "helm {} ({}): {}",
        helm.version,
        helm.source,
        helm.path.display()
    );
    assert!(helm.version.starts_with("v3."), "{}", helm.version);
    let short = run(&helm.path, &["version", "--short"]);
    assert!(short.contains(&helm.version), "{short}");
    if matches!(helm.source, BinarySource::Built { .. }) {
        assert_eq!(helm.version, pinned_helm_version());
        let full = run(&helm.path, &["version"]);
        assert!(full.contains("GitTreeState:\"clean\""), "{full}");
    }
}

#[tokio::test]
async fn a_bad_scheduler_path_is_a_clear_error() {
    // The given path wins before anything is built, so an empty cache folder is enough.
    let cache = BinaryCache::new(std::env::temp_dir().join("hami-e2e-binaries-test-empty"));
    let release = HamiRelease::find(None).expect("default release");
    let missing = Path::new("/nonexistent/hami/scheduler");
    let err = binaries::hami_scheduler_from(&cache, &release, Some(missing.as_os_str()))
        .await
        .expect_err("a missing binary is refused");
    assert!(matches!(err, Error::BadBinary { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("/nonexistent/hami/scheduler"), "{message}");
    assert!(message.contains(HAMI_SCHEDULER_ENV), "{message}");

    // A binary that runs but answers neither `version` nor `--help`.
    let err = binaries::hami_scheduler_from(&cache, &release, Some("/bin/false".as_ref()))
        .await
        .expect_err("a failing binary is refused");
    let message = err.to_string();
    assert!(message.contains("`--help` failed"), "{message}");
    assert!(message.contains(HAMI_SCHEDULER_ENV), "{message}");
}

#[tokio::test]
async fn a_bad_helm_path_is_a_clear_error() {
    let cache = BinaryCache::new(std::env::temp_dir().join("hami-e2e-binaries-test-empty"));
    let err = binaries::helm_from(&cache, Some("/nonexistent/helm".as_ref()), None)
        .await
        .expect_err("a missing helm is refused");
    let message = err.to_string();
    assert!(message.contains("/nonexistent/helm"), "{message}");
    assert!(message.contains(HELM_ENV), "{message}");

    // Runs, but is not helm: `echo version --short` prints no version.
    let err = binaries::helm_from(&cache, Some("/bin/echo".as_ref()), None)
        .await
        .expect_err("a binary that is not helm is refused");
    assert!(err.to_string().contains("printed no version"), "{err}");
}

// --- The scheduler's other ways: a HAMi checkout, the resolver, once per process ---------

/// A folder under Cargo's temporary folder for integration tests, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hami-e2e-binaries-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test folder");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FAKE_MAIN_GO: &str = r#"// A stand-in for HAMi's scheduler command: it only reports its version.
package main

import (
	"fmt"
	"os"

	"github.com/Project-HAMi/HAMi/pkg/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		version.Print()
		return
	}
	fmt.Println("usage: scheduler version")
}
"#;

/// A Go module at HAMi's path, standard library only, that builds like a HAMi checkout:
/// `VERSION`, `pkg/version` stamped with `-X`, `cmd/scheduler` printing it.
fn fake_checkout(dir: &Path) {
    let files = [
        ("go.mod", "module github.com/Project-HAMi/HAMi\n\ngo 1.22\n"),
        ("VERSION", "v9.9.9-test\n"),
        (
            "pkg/version/version.go",
            r#"// Package version is stamped by the linker, as HAMi's Makefile does.
package version

import "fmt"

var (
	version   = "unknown"
	revision  = "unknown"
	buildDate = "unknown"
)

// Print prints what `scheduler version` prints.
func Print() {
	fmt.Printf("version:          %s\nrevision:         %s\nbuild date:       %s\n", version, revision, buildDate)
}
"#,
        ),
        ("cmd/scheduler/main.go", FAKE_MAIN_GO),
    ];
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
}

/// Writes an executable script and waits until it can be run: a thread forking while the
/// file was open for writing makes exec fail with "Text file busy" until that child execs.
/// Scripts answer `__probe` by exiting at once.
fn write_script(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = format!("#!/bin/sh\n[ \"$1\" = __probe ] && exit 0\n{body}");
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for _ in 0..100 {
        match Command::new(path).arg("__probe").status() {
            Ok(_) => return path.to_path_buf(),
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot run {}: {e}", path.display()),
        }
    }
    panic!("{} stays busy", path.display());
}

/// The machine's `go`, by absolute path.
fn real_go() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("go"))
        .find(|p| p.is_file())
        .expect("these tests need `go` on PATH")
}

/// A `go` that records each call in `calls` and runs the machine's Go offline.
fn counting_go(dir: &Path, calls: &Path) -> PathBuf {
    write_script(
        &dir.join("bin/go"),
        &format!(
            "echo \"$*\" >> '{}'\nGOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off exec '{}' \"$@\"\n",
            calls.display(),
            real_go().display()
        ),
    )
}

/// A `go` that records each call in `calls`, answers `go version`, and fails every other
/// command the way `go` does when the module proxy refuses HAMi's module.
fn refused_go(dir: &Path, calls: &Path) -> PathBuf {
    const PSEUDO: &str = "v0.0.0-20260821062039-4707fb02c91c";
    write_script(
        &dir.join("go"),
        &format!(
            "echo \"$*\" >> '{calls}'\n\
             if [ \"$1\" = version ]; then echo 'go version go1.26.8 linux/amd64'; exit 0; fi\n\
             echo 'go: downloading github.com/Project-HAMi/HAMi {PSEUDO}' >&2\n\
             echo 'go: github.com/Project-HAMi/HAMi@{PSEUDO}: reading https://proxy.golang.org/github.com/!project-!h!a!mi/!h!a!mi/@v/{PSEUDO}.zip: 403 Forbidden' >&2\n\
             exit 1\n",
            calls = calls.display()
        ),
    )
}

/// How many `go build` runs `calls` recorded.
fn builds(calls: &Path) -> usize {
    std::fs::read_to_string(calls)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("build "))
        .count()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=hami-e2e test",
            "-c",
            "user.email=test@hami-e2e.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap())
        .output()
        .expect("these tests need `git`");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn inspect(dir: &Path) -> HamiCheckout {
    HamiCheckout::inspect(dir)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_checkout_outside_git_is_built_once_and_rebuilt_after_an_edit() {
    let tmp = TempDir::new("nogit");
    let dir = tmp.path().join("HAMi");
    fake_checkout(&dir);
    let calls = tmp.path().join("go-calls");
    let go = counting_go(tmp.path(), &calls);
    let cache = BinaryCache::new(tmp.path().join("cache"));

    let checkout = inspect(&dir).await;
    assert_eq!(checkout.commit, None);
    assert_eq!(checkout.changes, 0);
    assert_eq!(checkout.version, "v9.9.9-test");
    assert!(
        checkout.key.starts_with("hami-scheduler-src-nogit-"),
        "{}",
        checkout.key
    );

    let first = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.version, "v9.9.9-test");
    let canonical = dir.canonicalize().unwrap();
    assert_eq!(
        first.source,
        BinarySource::Source {
            dir: canonical.clone(),
            commit: None,
            changes: 0
        }
    );
    assert_eq!(
        first.source.to_string(),
        format!(
            "built from the checkout {} (not a git checkout)",
            canonical.display()
        )
    );
    assert_eq!(first.path, checkout.cache_dir(&cache).join("scheduler"));
    let log = std::fs::read_to_string(first.path.with_file_name("build.log")).unwrap();
    assert!(log.contains("./cmd/scheduler"), "{log}");
    let version = run(&first.path, &["version"]);
    assert!(
        version.contains("version:          v9.9.9-test"),
        "{version}"
    );
    assert!(version.contains("revision:         unknown"), "{version}");
    assert_eq!(builds(&calls), 1);

    // Unchanged: the cached binary, at once.
    let started = Instant::now();
    let again = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, first);
    assert_eq!(builds(&calls), 1, "an unchanged checkout is not rebuilt");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A touched Go file, an edited one: new keys. Another file: the same key.
    let main_go = dir.join("cmd/scheduler/main.go");
    std::fs::File::options()
        .write(true)
        .open(&main_go)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    let touched = inspect(&dir).await;
    assert_ne!(touched.key, checkout.key);
    let version_go = dir.join("pkg/version/version.go");
    let mut text = std::fs::read_to_string(&version_go).unwrap();
    text.push_str("\n// edited\n");
    std::fs::write(&version_go, text).unwrap();
    let edited = inspect(&dir).await;
    assert_ne!(edited.key, touched.key);
    std::fs::write(dir.join("README.md"), "not Go\n").unwrap();
    assert_eq!(inspect(&dir).await.key, edited.key);

    let rebuilt = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(builds(&calls), 2);
    assert_ne!(rebuilt.path, first.path);
    assert_eq!(rebuilt.path, edited.cache_dir(&cache).join("scheduler"));
    assert_eq!(rebuilt.version, "v9.9.9-test");
}

#[tokio::test]
async fn a_git_checkout_is_keyed_by_its_commit_and_uncommitted_changes() {
    let tmp = TempDir::new("git");
    let dir = tmp.path().join("HAMi");
    fake_checkout(&dir);
    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "a stand-in for HAMi"]);
    let calls = tmp.path().join("go-calls");
    let go = counting_go(tmp.path(), &calls);
    let cache = BinaryCache::new(tmp.path().join("cache"));

    let clean = inspect(&dir).await;
    let commit = clean.commit.clone().expect("a git checkout has a commit");
    assert_eq!(commit.len(), 40, "{commit}");
    assert_eq!(clean.changes, 0);
    assert_eq!(clean.revision(), commit[..12]);
    assert!(
        clean
            .key
            .starts_with(&format!("hami-scheduler-src-{}-", &commit[..12])),
        "{}",
        clean.key
    );
    let date = &clean.build_date;
    assert!(
        date.len() == 17
            && date.as_bytes()[8] == b'-'
            && date[..8].bytes().all(|b| b.is_ascii_digit()),
        "{date}"
    );
    assert!(clean.ldflags().contains(&format!(
        "-X github.com/Project-HAMi/HAMi/pkg/version.revision={}",
        &commit[..12]
    )));

    let first = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let canonical = dir.canonicalize().unwrap();
    assert_eq!(
        first.source.to_string(),
        format!(
            "built from the checkout {} at {}",
            canonical.display(),
            &commit[..8]
        )
    );
    assert_eq!(first.version, "v9.9.9-test");
    let version = run(&first.path, &["version"]);
    assert!(
        version.contains(&format!("revision:         {}\n", &commit[..12])),
        "{version}"
    );
    assert!(
        version.contains(&format!("build date:       {date}")),
        "{version}"
    );
    let again = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, first);
    assert_eq!(builds(&calls), 1, "an unchanged checkout is not rebuilt");

    // An uncommitted edit: a new key, a dirty revision, a rebuild.
    let main_go = dir.join("cmd/scheduler/main.go");
    std::fs::write(&main_go, format!("{FAKE_MAIN_GO}\n// edited\n")).unwrap();
    let edited = inspect(&dir).await;
    assert_eq!(edited.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(edited.changes, 1);
    assert_ne!(edited.key, clean.key);
    assert_eq!(edited.revision(), format!("{}-dirty", &commit[..12]));
    let dirty = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(builds(&calls), 2);
    assert_ne!(dirty.path, first.path);
    assert!(
        dirty.source.to_string().ends_with("(+1 uncommitted)"),
        "{}",
        dirty.source
    );
    let version = run(&dirty.path, &["version"]);
    assert!(
        version.contains(&format!("{}-dirty", &commit[..12])),
        "{version}"
    );

    // An untracked file counts, and so does a change of it.
    let extra = dir.join("cmd/scheduler/extra.go");
    std::fs::write(&extra, "package main\n").unwrap();
    let untracked = inspect(&dir).await;
    assert_eq!(untracked.changes, 2);
    assert_ne!(untracked.key, edited.key);
    std::fs::write(&extra, "package main\n\n// more\n").unwrap();
    assert_ne!(inspect(&dir).await.key, untracked.key);

    // Back to the commit: the first key, and the first binary from the cache.
    std::fs::remove_file(&extra).unwrap();
    std::fs::write(&main_go, FAKE_MAIN_GO).unwrap();
    assert_eq!(inspect(&dir).await.key, clean.key);
    let back = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, first);
    assert_eq!(builds(&calls), 2);
}

#[tokio::test]
async fn a_checkout_that_is_missing_or_has_no_cmd_scheduler_is_a_clear_error() {
    let tmp = TempDir::new("bad-source");
    let cache = BinaryCache::new(tmp.path().join("cache"));
    let go = Path::new("go");

    let missing = tmp.path().join("no-such-checkout");
    let err = binaries::hami_scheduler_from_source(&cache, &missing, go)
        .await
        .expect_err("a missing folder is refused");
    assert!(
        matches!(&err, Error::BadSource { path, .. } if *path == missing),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(HAMI_SOURCE_ENV), "{message}");
    assert!(message.contains(&*missing.to_string_lossy()), "{message}");
    assert!(message.contains("cannot read it"), "{message}");

    let empty = tmp.path().join("not-hami");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("go.mod"), "module example.com/other\n").unwrap();
    let message = binaries::hami_scheduler_from_source(&cache, &empty, go)
        .await
        .expect_err("a folder without cmd/scheduler is refused")
        .to_string();
    assert_eq!(
        message,
        format!(
            "{HAMI_SOURCE_ENV}=`{}` is not a HAMi checkout: it has no `cmd/scheduler` folder (name the top folder of a HAMi checkout)",
            empty.display()
        )
    );

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let message = binaries::hami_scheduler_from_source(&cache, &file, go)
        .await
        .expect_err("a file is refused")
        .to_string();
    assert!(
        message.ends_with("is not a HAMi checkout: it is not a folder"),
        "{message}"
    );
}

#[tokio::test]
async fn a_checkout_that_does_not_build_names_the_folder_the_command_and_the_log() {
    let tmp = TempDir::new("broken");
    let dir = tmp.path().join("HAMi");
    fake_checkout(&dir);
    std::fs::write(
        dir.join("cmd/scheduler/main.go"),
        "package main\n\nfunc main() { notDefinedAnywhere() }\n",
    )
    .unwrap();
    let calls = tmp.path().join("go-calls");
    let go = counting_go(tmp.path(), &calls);
    let cache = BinaryCache::new(tmp.path().join("cache"));

    let err = binaries::hami_scheduler_from_source(&cache, &dir, &go)
        .await
        .expect_err("a broken checkout does not build");
    let message = err.to_string();
    let Error::SourceBuild {
        dir: at,
        command,
        status,
        log,
        tail,
    } = err
    else {
        panic!("{message}");
    };
    let checkout = inspect(&dir).await;
    assert_eq!(at, checkout.dir);
    assert!(command.contains("build -trimpath -ldflags"), "{command}");
    assert!(command.contains("./cmd/scheduler"), "{command}");
    assert!(command.starts_with("CGO_ENABLED=1 "), "{command}");
    assert!(status.contains("exit status: 1"), "{status}");
    assert_eq!(log, checkout.cache_dir(&cache).join("build.log"));
    assert!(tail.contains("undefined: notDefinedAnywhere"), "{tail}");
    assert!(tail.lines().count() <= 20, "{tail}");
    for part in [
        &*checkout.dir.to_string_lossy(),
        &*log.to_string_lossy(),
        HAMI_SOURCE_ENV,
        "notDefinedAnywhere",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(
        !checkout.cache_dir(&cache).join(".complete").exists(),
        "a failed build is not cached"
    );

    // A `go` that cannot be started.
    let no_go = tmp.path().join("no-such-go");
    let message = binaries::hami_scheduler_from_source(&cache, &dir, &no_go)
        .await
        .expect_err("no go, no build")
        .to_string();
    assert!(message.contains("could not start"), "{message}");
    assert!(message.contains(&*no_go.to_string_lossy()), "{message}");
}

#[tokio::test]
async fn the_resolver_takes_the_scheduler_then_the_checkout_and_never_falls_through() {
    let tmp = TempDir::new("order");
    let dir = tmp.path().join("HAMi");
    fake_checkout(&dir);
    let calls = tmp.path().join("go-calls");
    let go = counting_go(tmp.path(), &calls);
    let cache = BinaryCache::new(tmp.path().join("cache"));
    let release = HamiRelease::find(None).unwrap();
    let given = write_script(
        &tmp.path().join("given/scheduler"),
        "echo 'version:          v1.2.3-given'\n",
    );
    let find = |inputs: SchedulerInputs| {
        let cache = cache.clone();
        async move { binaries::find_hami_scheduler_with(&cache, &release, &inputs).await }
    };
    let with_go = || SchedulerInputs::new().go(&go);

    // A given scheduler wins over a given checkout, which is not even looked at.
    let found = find(
        with_go()
            .scheduler(&given)
            .source(tmp.path().join("no-such")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.version, "v1.2.3-given");
    assert_eq!(found.source, BinarySource::Env(HAMI_SCHEDULER_ENV));
    assert_eq!(found.path, given);

    // A bad scheduler is a failure of its own: the checkout is not built instead.
    for bad in [
        Path::new("/nonexistent/hami/scheduler"),
        Path::new("/bin/false"),
    ] {
        let err = find(with_go().scheduler(bad).source(&dir))
            .await
            .expect_err("a bad scheduler does not fall through");
        assert!(!err.is_unavailable(), "{err}");
        let FindSchedulerError::Failed(e) = &err else {
            panic!("{err}")
        };
        assert!(matches!(**e, Error::BadBinary { .. }), "{e:?}");
        assert!(err.to_string().contains(HAMI_SCHEDULER_ENV), "{err}");
        assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
    }
    assert_eq!(builds(&calls), 0);

    // A bad checkout is a failure too, not a reason to build the pinned module.
    let err = find(with_go().source(tmp.path().join("no-such")))
        .await
        .expect_err("a bad checkout does not fall through");
    assert!(
        matches!(&err, FindSchedulerError::Failed(e) if matches!(**e, Error::BadSource { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(HAMI_SOURCE_ENV), "{err}");

    // A checkout alone is built; an empty scheduler counts as unset.
    let found = find(with_go().scheduler("").source(&dir))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.version, "v9.9.9-test");
    assert!(
        matches!(found.source, BinarySource::Source { .. }),
        "{}",
        found.source
    );
    assert_eq!(builds(&calls), 1);
}

#[tokio::test]
async fn an_answer_is_found_once_per_process() {
    let tmp = TempDir::new("once-source");
    let dir = tmp.path().join("HAMi");
    fake_checkout(&dir);
    let calls = tmp.path().join("go-calls");
    // Fails every build, and a failed build is not cached on disk: only the memo stops a
    // second attempt.
    let go = refused_go(tmp.path(), &calls);
    let cache = BinaryCache::new(tmp.path().join("cache"));
    let release = HamiRelease::find(None).unwrap();
    let inputs = SchedulerInputs::new().source(&dir).go(&go);

    let (a, b) = tokio::join!(
        binaries::find_hami_scheduler_once_with(&cache, &release, &inputs),
        binaries::find_hami_scheduler_once_with(&cache, &release, &inputs),
    );
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert!(
        matches!(&a, FindSchedulerError::Failed(e) if matches!(**e, Error::SourceBuild { .. })),
        "{a}"
    );
    assert!(a.to_string().contains("403 Forbidden"), "{a}");
    assert_eq!(a.to_string(), b.to_string());
    let started = Instant::now();
    let c = binaries::find_hami_scheduler_once_with(&cache, &release, &inputs)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.to_string(), a.to_string());
    assert_eq!(builds(&calls), 1, "tried once");

    // Without the memo it is tried again.
    binaries::find_hami_scheduler_with(&cache, &release, &inputs)
        .await
        .unwrap_err();
    assert_eq!(builds(&calls), 2);
}

/// Tells the child test (below) where its files are.
const CHILD_ENV: &str = "HAMI_E2E_BINARIES_TEST_CHILD";
const CHILD_TEST: &str = "the_pinned_module_child";

/// The pinned module is built with the `go` on `PATH`, so a stub `go` needs a process of
/// its own: this runs the child test below in a copy of this test binary, with `PATH`
/// starting at a `go` that fails like a module proxy refusing HAMi, and neither
/// `HAMI_E2E_HAMI_SCHEDULER` nor `HAMI_E2E_HAMI_SOURCE` set.
#[test]
fn the_pinned_module_is_tried_once_per_process_and_a_refusal_is_a_skip() {
    let tmp = TempDir::new("once-module");
    let stub = tmp.path().join("stub-bin");
    refused_go(&stub, &tmp.path().join("go-calls"));
    let path = format!("{}:/usr/bin:/bin", stub.display());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .env("PATH", path)
        .env_remove(HAMI_SCHEDULER_ENV)
        .env_remove(HAMI_SOURCE_ENV)
        .env_remove(HAMI_VERSION_ENV)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("child: checked"),
        "the child test did not run: {text}"
    );
}

#[tokio::test]
#[ignore = "run in a child process by the_pinned_module_is_tried_once_per_process_and_a_refusal_is_a_skip"]
async fn the_pinned_module_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // run directly (`--ignored`): nothing to check
    };
    let dir = PathBuf::from(dir);
    let calls = dir.join("go-calls");
    let cache = BinaryCache::new(dir.join("cache"));
    let release = HamiRelease::find(None).unwrap();

    let (a, b) = tokio::join!(
        binaries::find_hami_scheduler_once(&cache, &release),
        binaries::find_hami_scheduler_once(&cache, &release),
    );
    assert_eq!(builds(&calls), 1, "tried once");
    let a = a.expect_err("the stub refuses the module");
    let FindSchedulerError::Unavailable { reason } = &a else {
        panic!("a refused module is a skip, not a failure: {a}");
    };
    assert!(
        reason.starts_with(
            "no HAMi scheduler: HAMI_E2E_HAMI_SCHEDULER and HAMI_E2E_HAMI_SOURCE are unset, \
             and building HAMi v2.10.0 from its Go module (hami-e2e-helm/src/go/hami-2.10) failed: \
             go: github.com/Project-HAMi/HAMi@v0.0.0-20260821062039-4707fb02c91c: reading https://proxy.golang.org/"
        ),
        "{reason}"
    );
    assert!(
        reason.contains(".zip: 403 Forbidden (go's output: "),
        "{reason}"
    );
    assert!(
        reason.ends_with("logs/hami-scheduler-v2.10.0.log)"),
        "{reason}"
    );
    assert!(
        !reason.contains("downloading"),
        "only the line that says why: {reason}"
    );
    assert!(!reason.contains('\n'), "{reason}");
    assert_eq!(b.expect_err("the same answer").to_string(), *reason);

    let started = Instant::now();
    let c = binaries::find_hami_scheduler_once(&cache, &release).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(c.expect_err("the same answer").to_string(), *reason);
    assert_eq!(builds(&calls), 1, "not tried again");

    // Without the memo the build is tried again; the crate's own error keeps go's output.
    let d = binaries::find_hami_scheduler(&cache, &release).await;
    assert!(d.expect_err("refused again").is_unavailable());
    assert_eq!(builds(&calls), 2);
    let e = binaries::hami_scheduler(&cache, &release)
        .await
        .expect_err("refused again");
    assert!(
        matches!(e, Error::K8s(hami_e2e_k8s::Error::GoBuild { .. })),
        "{e:?}"
    );
    println!("child: checked");
}
