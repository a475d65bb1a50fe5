//! The dashboard in a real browser: the `serve` binary on in-memory stores, headless Chromium
//! driven through chromedriver (WebDriver, with `fantoccini`). The test checks the figures the
//! page shows against the JSON API, opens an aggregate, checks its events and snapshots, drives
//! the time-travel slider (by script and by keyboard) and checks the state shown against
//! `GET /{type}/{id}/at?version=N`, sees both pages refresh themselves, and keeps screenshots:
//! `target/dashboard.png` (the overview) and `target/dashboard-aggregate.png`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them); `CHROMIUM` and `CHROMEDRIVER` name other binaries. Without them the
//! test prints a `SKIPPED:` line and passes, except under `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Server;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long any one thing may take to show up on the page.
const PATIENCE: Duration = Duration::from_secs(30);

/// Versions written to `acc-1` before the page opens.
const ACCOUNT_VERSION: u64 = 135;

/// Events per page on the aggregate page (`EVENTS_PAGE` in app.js).
const EVENTS_PAGE: u64 = 50;

/// chromedriver on a free port, in a process group of its own; the group (chromedriver and
/// the browsers it started) is killed on drop, however the test ends.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let started = Instant::now();
        loop {
            let ready = reqwest::get(&status).await.ok().map(|r| r.status());
            if ready.is_some_and(|s| s.is_success()) {
                return driver;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The negative pid names the group: chromedriver and every browser it started.
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}

/// The first of `names` found on `PATH`, or the file `$variable` names when it is set.
fn program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Where the screenshots go: the workspace's `target/` (or `$CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap_or(dir)
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).send().await.expect("request sent");
    assert!(response.status().is_success(), "GET {url}: {response:?}");
    response.json().await.unwrap()
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let response = client.post(&url).json(&body).send().await.expect("sent");
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "POST {url}: {status} {body}");
    body
}

/// Polls `probe` until it returns `Some`, for at most [`PATIENCE`]; `what` names it on failure.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `script` in the page (a function body: `arguments[0]`… are `args`) and returns its value.
async fn js(browser: &Client, script: &str, args: Vec<Value>) -> Value {
    browser
        .execute(script, args)
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// The text of the first element matching `selector`, or `None` when there is none.
async fn text(browser: &Client, selector: &str) -> Option<String> {
    let value = js(
        browser,
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        vec![json!(selector)],
    )
    .await;
    value.as_str().map(str::to_owned)
}

/// Waits until the element matching `selector` shows `expected`.
async fn wait_text(browser: &Client, selector: &str, expected: &str) {
    let mut last = None;
    let what = format!("{selector} to show {expected:?}");
    let started = Instant::now();
    loop {
        let shown = text(browser, selector).await;
        if shown.as_deref() == Some(expected) {
            return;
        }
        last = shown.or(last);
        assert!(
            started.elapsed() < PATIENCE,
            "timed out waiting for {what}; it shows {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A figure as shown on the overview ("1,234" → 1234).
fn number(shown: &str) -> u64 {
    shown
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{shown:?} is not a count"))
}

/// The figures of one type in `GET /stats`.
fn of_type<'a>(stats: &'a Value, aggregate_type: &str) -> &'a Value {
    stats["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["aggregate_type"] == aggregate_type)
        .unwrap_or_else(|| panic!("no {aggregate_type} in {stats}"))
}

/// Moves the slider to `version` as a script would (value, then `input` and `change`).
async fn slide_to(browser: &Client, version: u64) {
    js(
        browser,
        "const s = document.querySelector('#tt-slider');
         s.value = arguments[0];
         s.dispatchEvent(new Event('input', { bubbles: true }));
         s.dispatchEvent(new Event('change', { bubbles: true }));",
        vec![json!(version)],
    )
    .await;
}

/// Waits until the time-travel panel shows version `version`, then checks every figure it
/// shows against `GET /accounts/acc-1/at?version=N`.
async fn check_time_travel(browser: &Client, api: &reqwest::Client, server: &Server, version: u64) {
    let expected = get(
        api,
        server.url(&format!("/accounts/acc-1/at?version={version}")),
    )
    .await;
    assert_eq!(expected["version"], version);
    wait_text(browser, "#tt-version", &version.to_string()).await;
    wait_text(browser, "#tt-target", &format!("v{version}")).await;
    let shown = js(
        browser,
        "const q = (s) => document.querySelector(s);
         return {
           value: Number(q('#tt-slider').value),
           state: q('#tt-state').textContent,
           replayed: q('#tt-replayed').textContent,
           from: q('#tt-from-snapshot').getAttribute('data-version'),
           from_text: q('#tt-from-snapshot').textContent,
           future: document.querySelectorAll('#events-table tbody tr.future').length,
           rows: [...document.querySelectorAll('#events-table tbody tr')].map((r) => Number(r.dataset.version)),
         };",
        vec![],
    )
    .await;
    assert_eq!(shown["value"], version, "{shown}");
    let state: Value = serde_json::from_str(shown["state"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("the state shown is not JSON ({e}): {shown}"));
    assert_eq!(state, expected["state"], "state at v{version}");
    assert_eq!(
        number(shown["replayed"].as_str().unwrap()),
        expected["events_replayed"].as_u64().unwrap(),
        "events replayed at v{version}"
    );
    match expected["from_snapshot"]["version"].as_u64() {
        Some(snapshot) => assert_eq!(shown["from"], snapshot.to_string(), "{shown}"),
        None => {
            assert_eq!(shown["from"], Value::Null, "{shown}");
            assert_eq!(shown["from_text"], "none");
        }
    }
    // The events after the slider's version are dimmed, the others not.
    let later = shown["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.as_u64().unwrap() > version)
        .count();
    assert_eq!(shown["future"], later, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says_and_travels_in_time() {
    let started = Instant::now();
    let chromium = program(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let chromedriver = program("CHROMEDRIVER", &["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        let message = "the dashboard browser test needs chromium and chromedriver \
                       (apt-get install chromium chromium-driver; or set CHROMIUM and CHROMEDRIVER)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}; under CI=true they must be installed (.ci/run does it)");
        }
        println!("SKIPPED: {message}");
        return;
    };

    let (server, driver) = tokio::join!(Server::start(None, &[]), Driver::start(&chromedriver));
    let api = reqwest::Client::new();

    // An account with a history: opened, 134 deposits, one rejected withdrawal; a snapshot by
    // the strategy at v100 (every 100 events), one taken on request at v130.
    let account = server.url("/accounts/acc-1/commands");
    post(
        &api,
        account.clone(),
        json!({"type": "open", "owner": "cus-1"}),
    )
    .await;
    for n in 1..ACCOUNT_VERSION {
        if n == 130 {
            let taken = post(&api, server.url("/accounts/acc-1/snapshots"), json!({})).await;
            assert_eq!(taken["version"], 130);
        }
        post(
            &api,
            account.clone(),
            json!({"type": "deposit", "amount_cents": n * 100, "reference": format!("deposit {n}")}),
        )
        .await;
    }
    let refused = api
        .post(&account)
        .json(&json!({"type": "withdraw", "amount_cents": 100_000_000, "reference": "too much"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::CONFLICT);
    let customer = server.url("/customers/cus-1/commands");
    for body in [
        json!({"type": "register", "name": "Ada", "email": "ada@example.com",
               "address": {"line1": "1 Main St", "city": "Utrecht", "postal_code": "3511", "country": "NL"}}),
        json!({"type": "link_account", "account_id": "acc-1"}),
        json!({"type": "verify"}),
    ] {
        post(&api, customer.clone(), body).await;
    }
    // The strategy's snapshot is written off the command path: wait until it is stored.
    let snapshots_url = server.url("/accounts/acc-1/snapshots");
    let snapshots = eventually("both snapshots of acc-1", || async {
        let listed = get(&api, snapshots_url.clone()).await;
        (listed["snapshots"].as_array().unwrap().len() == 2).then_some(listed)
    })
    .await;

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--window-size=1400,1300", "--lang=en-US"],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session on chromedriver");

    // ---- The overview: every figure as the API has it. ----
    browser.goto(&server.url("/dashboard")).await.unwrap();
    let stats = get(&api, server.url("/stats")).await;
    for aggregate_type in ["account", "customer"] {
        let expected = of_type(&stats, aggregate_type);
        for (figure, value) in [
            ("live_actors", &expected["live_actors"]),
            ("activations", &expected["activations"]),
            ("commands_total", &expected["commands"]["total"]),
            ("snapshots_taken", &expected["snapshots"]["taken"]),
        ] {
            let selector = format!("[data-type='{aggregate_type}'][data-figure='{figure}']");
            let value = value.as_u64().unwrap();
            eventually(&format!("{selector} = {value}"), || async {
                let shown = text(&browser, &selector).await?;
                (shown != "–" && number(&shown) == value).then_some(())
            })
            .await;
        }
        // The replay-size histogram's bars count every activation, bucket by bucket.
        let bars = js(
            &browser,
            "const card = document.querySelector(`#types [data-type='${arguments[0]}']`);
             return [...card.querySelectorAll('[data-hist=replay_size] .bar-count')]
               .map((t) => Number(t.textContent.replace(/,/g, '')));",
            vec![json!(aggregate_type)],
        )
        .await;
        let histogram = &expected["histograms"]["replay_size"];
        let non_empty: Vec<u64> = histogram["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .filter(|count| *count > 0)
            .collect();
        assert_eq!(bars, json!(non_empty), "{aggregate_type} replay histogram");
        assert_eq!(
            non_empty.iter().sum::<u64>(),
            expected["activations"].as_u64().unwrap()
        );
    }
    let account_stats = of_type(&stats, "account");
    // Every event came from one command, and one more was rejected.
    assert_eq!(account_stats["commands"]["total"], ACCOUNT_VERSION + 1);
    assert_eq!(account_stats["commands"]["rejected"], 1);
    assert_eq!(account_stats["live_actors"], 1);

    // It refreshes itself: a new command shows up without reloading the page.
    post(
        &api,
        server.url("/customers/cus-2/commands"),
        json!({"type": "register", "name": "Bob", "email": "bob@example.com",
               "address": {"line1": "2 Main St", "city": "Utrecht", "postal_code": "3511", "country": "NL"}}),
    )
    .await;
    let customers = of_type(&get(&api, server.url("/stats")).await, "customer").clone();
    wait_text(
        &browser,
        "[data-type='customer'][data-figure='commands_total']",
        &customers["commands"]["total"].to_string(),
    )
    .await;
    wait_text(
        &browser,
        "[data-type='customer'][data-figure='live_actors']",
        &customers["live_actors"].to_string(),
    )
    .await;
    wait_text(
        &browser,
        "#recent-table tbody tr:first-child td:nth-child(2)",
        "cus-2",
    )
    .await;
    // The reminder scheduler's card (`reminders` of /stats): nothing has fired here.
    wait_text(&browser, "#reminders-card [data-fact='fired'] .value", "0").await;
    let png = browser.screenshot().await.unwrap();
    let overview_png = target_dir().join("dashboard.png");
    std::fs::write(&overview_png, png).unwrap();

    // ---- One aggregate: opened from the "recently written" list, as an operator would. ----
    browser
        .find(Locator::Css("#recent-table a[href='#/accounts/acc-1']"))
        .await
        .expect("acc-1 among the recently written aggregates")
        .click()
        .await
        .unwrap();
    wait_text(&browser, "#agg-version", &format!("v{ACCOUNT_VERSION}")).await;
    wait_text(&browser, "#agg-events", &ACCOUNT_VERSION.to_string()).await;

    // The events table: the newest page, newest first, as the API lists them.
    let after = ACCOUNT_VERSION - EVENTS_PAGE;
    let page = get(
        &api,
        server.url(&format!(
            "/accounts/acc-1/events?after={after}&limit={EVENTS_PAGE}"
        )),
    )
    .await;
    let mut expected_rows: Vec<Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["version"], e["event_type"]]))
        .collect();
    expected_rows.reverse();
    let rows = eventually("the events table", || async {
        let rows = js(
            &browser,
            "return [...document.querySelectorAll('#events-table tbody tr')]
               .map((r) => [Number(r.dataset.version), r.querySelector('.etype').textContent]);",
            vec![],
        )
        .await;
        (rows
            .as_array()
            .is_some_and(|r| r.len() as u64 == EVENTS_PAGE))
        .then_some(rows)
    })
    .await;
    assert_eq!(rows, json!(expected_rows));

    // The snapshots: one row each, newest first, with the API's verification.
    let mut expected_snapshots: Vec<Value> = snapshots["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let verified = if s["valid"] == true {
                "verified"
            } else {
                "invalid"
            };
            json!([s["version"], verified])
        })
        .collect();
    expected_snapshots.sort_by_key(|s| std::cmp::Reverse(s[0].as_u64()));
    assert_eq!(
        json!(expected_snapshots),
        json!([[130, "verified"], [100, "verified"]])
    );
    let shown_snapshots = js(
        &browser,
        "return [...document.querySelectorAll('#snapshots-table tbody tr')]
           .map((r) => [Number(r.dataset.version), r.querySelector('.badge').textContent]);",
        vec![],
    )
    .await;
    assert_eq!(shown_snapshots, json!(expected_snapshots));

    // The slider starts at the newest version, then travels: by script to v110 (from the
    // snapshot at v100, 10 events replayed), by keyboard one step back, and to the start.
    check_time_travel(&browser, &api, &server, ACCOUNT_VERSION).await;
    slide_to(&browser, 110).await;
    check_time_travel(&browser, &api, &server, 110).await;
    let slider = browser.find(Locator::Css("#tt-slider")).await.unwrap();
    slider.send_keys(&Key::Left).await.unwrap();
    check_time_travel(&browser, &api, &server, 109).await;
    slider.send_keys(&Key::Home).await.unwrap();
    check_time_travel(&browser, &api, &server, 0).await;
    slide_to(&browser, 40).await;
    check_time_travel(&browser, &api, &server, 40).await;

    // A new event shows up by itself; the slider, left in the past, stays where it is.
    post(
        &api,
        account.clone(),
        json!({"type": "deposit", "amount_cents": 1, "reference": "while watching"}),
    )
    .await;
    wait_text(
        &browser,
        "#agg-version",
        &format!("v{}", ACCOUNT_VERSION + 1),
    )
    .await;
    wait_text(
        &browser,
        "#events-table tbody tr:first-child td:first-child",
        &(ACCOUNT_VERSION + 1).to_string(),
    )
    .await;
    // For the screenshot: a version whose row is in view, the later ones dimmed above it.
    slide_to(&browser, 128).await;
    check_time_travel(&browser, &api, &server, 128).await;
    let png = browser.screenshot().await.unwrap();
    let aggregate_png = target_dir().join("dashboard-aggregate.png");
    std::fs::write(&aggregate_png, png).unwrap();

    browser.close().await.unwrap();
    drop(driver);
    println!(
        "dashboard screenshots: {} and {} ({:.1} s)",
        overview_png.display(),
        aggregate_png.display(),
        started.elapsed().as_secs_f64()
    );
}
