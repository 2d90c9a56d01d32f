//! The HTML report in a real headless browser (Debian's `chromium`, which `.ci/run`
//! installs; `HAMI_E2E_CHROMIUM` names another): a run with a passing, a failing (with an
//! attachment) and a skipped scenario is rendered, the browser loads the file offline, and a
//! check run in the page confirms that the failing scenario and its message are visible. A
//! screenshot is kept next to the report in `target/html-report-test/`.
//!
//! It needs a system package the README's set-up does not install, so it is ignored by
//! default: `.ci/run` installs chromium and runs it with `--include-ignored`; by hand,
//! `cargo test -p hami-e2e-core --test html_report -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hami_e2e_core::{Failure, Requirement, RunConfig, Runner, bail, scenario};

fn chromium() -> PathBuf {
    std::env::var_os("HAMI_E2E_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

/// Runs headless Chromium on `page` with `extra` flags; returns stdout.
fn browse(page: &Path, profile: &Path, extra: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}` ({e}): install Debian's chromium (`apt-get install chromium`, as .ci/run does) or set HAMI_E2E_CHROMIUM",
                chromium().display()
            )
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
#[ignore = "needs Debian's chromium (apt-get install chromium, or HAMI_E2E_CHROMIUM); .ci/run runs it"]
async fn the_report_shows_the_failure_in_a_real_browser() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("html-report-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.html");

    let mut config = RunConfig::default();
    config.human_output = false;
    config.parallel = 2;
    config.html = Some(report.clone());
    config.artifacts = dir.join("artifacts");
    let conclusion = Runner::new()
        .scenario(
            scenario("gpu/allocation/passes")
                .label("smoke")
                .run(|ctx| async move {
                    ctx.step("create a pod", async {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        Ok::<_, Failure>(())
                    })
                    .await?;
                    ctx.step("wait until it runs", async {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        Ok::<_, Failure>(())
                    })
                    .await
                }),
        )
        .scenario(scenario("gpu/overcommit/fails").run(|ctx| async move {
            ctx.attach(
                "events in hami-e2e-x",
                "Warning FilteringFailed: no available node, 1 nodes CardInsufficientMemory",
            );
            ctx.step("wait for <FilteringFailed>", async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, Failure>(())
            })
            .await?;
            bail!("expected 3000 MiB on GPU-0, HAMi granted 1500 & more")
        }))
        .scenario(
            scenario("gpu/real-device/skipped")
                .requires(Requirement::flag("real-device"))
                .run(|_| async { Ok(()) }),
        )
        .run(config)
        .await
        .expect("the run runs");
    assert!(!conclusion.success());
    let html = std::fs::read_to_string(&report).expect("the report is written");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    // A check run by the browser itself: is the failure's name and message laid out and shown?
    let check = r#"<script>
      function shown(el) {
        if (!el) return false;
        const r = el.getBoundingClientRect(), s = getComputedStyle(el);
        return r.width > 0 && r.height > 0 && s.display !== 'none' && s.visibility !== 'hidden' && s.opacity !== '0';
      }
      window.addEventListener('load', () => {
        const failure = document.querySelector('.failure');
        const title = failure && failure.querySelector('h3');
        const message = failure && failure.querySelector('.message');
        const bar = document.querySelector('.timeline .bar.failed');
        document.body.setAttribute('data-check', [
          shown(title) ? 'title:' + title.textContent : 'title:hidden',
          shown(message) ? 'message:' + message.textContent : 'message:hidden',
          shown(bar) ? 'bar:shown' : 'bar:hidden',
          'lanes:' + document.querySelectorAll('.timeline .lane').length,
        ].join('|'));
      });
    </script>"#;
    let probe = dir.join("probe.html");
    std::fs::write(&probe, html.replace("</body>", &format!("{check}</body>"))).unwrap();
    let dom = browse(&probe, &dir.join("profile"), &["--dump-dom"]);
    let start = dom
        .find("data-check=\"")
        .expect("the check ran in the browser")
        + "data-check=\"".len();
    let end = start + dom[start..].find('"').unwrap();
    let result = &dom[start..end];
    assert_eq!(
        result,
        "title:gpu::overcommit::fails|message:expected 3000 MiB on GPU-0, HAMi granted 1500 &amp; more|bar:shown|lanes:2"
    );
    assert!(
        dom.contains("needs real-device"),
        "the skip reason is in the page"
    );
    assert!(
        dom.contains("CardInsufficientMemory"),
        "the attachment is in the page"
    );

    let shot = dir.join("report.png");
    browse(
        &report,
        &dir.join("profile"),
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
