//! A night without anyone watching, on the toy target (CPU-light): a scripted
//! OpenAI-compatible endpoint that alternates good answers with outage windows (500s, 503s,
//! 429s with Retry-After), hung requests and garbage (empty, truncated, no `choices`, null
//! content cut by `length`, a lone surrogate escape), plus a streak of unusable replies that
//! trips the circuit breaker; the loop is killed with SIGKILL at seeded random moments while it
//! waits for the provider. At the end it is still one session, every decision is in the ledger
//! exactly once, and `ledger verify` passes. A fatal provider error (401) stops at once with
//! the setting to fix. Around the disk: worktrees and build outputs deleted between runs are
//! rebuilt, and a run directory that fills up ends in a recorded crash.

use std::time::{Duration, Instant};

use agentloop::testing::{CannedReply, ScriptedServer};
use agentloop_ledger::payload::{DecisionOutcome, Pause};
use agentloop_ledger::{Event, EventKind};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kill_group, output, spawn_group, TargetRepo};

agentloop_tests::e2e_paths!();

/// Seeded and reproducible (xorshift64*): the failures and the kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A 200 whose body is exactly `body` (garbage a provider in trouble sends).
fn raw_200(body: &str) -> CannedReply {
    CannedReply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
        delay: Duration::ZERO,
        echo_request_headers: false,
    }
}

/// A harmless patch that always applies to the toy's config (the trunk keeps `[optim]`).
fn good(n: usize) -> CannedReply {
    CannedReply::openai_chat(
        &format!(
            "DESCRIPTION: note {n}\nRATIONALE: documents the optimizer section.\n\n\
             config.toml\n<<<<<<< SEARCH\n[optim]\n=======\n[optim]\n# soak note {n}\n>>>>>>> REPLACE\n"
        ),
        300,
        40,
    )
}

fn garbage(kind: u64) -> CannedReply {
    match kind {
        0 => raw_200(""),
        1 => raw_200(r#"{"id":"x","choices":[{"index":0,"mess"#),
        2 => raw_200(r#"{"id":"x","object":"chat.completion","model":"m"}"#),
        3 => raw_200(
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"length"}]}"#,
        ),
        _ => raw_200(
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"\ud800"},"finish_reason":"stop"}]}"#,
        ),
    }
}

/// The endpoint's script: good answers between outage windows, hangs and garbage, and one
/// streak of replies without a patch long enough to trip the breaker (2 changes refused).
fn script(rng: &mut Rng, len: usize) -> Vec<CannedReply> {
    let mut out = Vec::new();
    let mut n = 0;
    while out.len() < len {
        if out.len() >= 12 && n == 3 {
            // Each change is asked twice (the retry says why); 8 in a row refuse 3 or more.
            for _ in 0..8 {
                out.push(CannedReply::openai_chat(
                    "I would lower the learning rate.",
                    200,
                    10,
                ));
            }
        }
        n += 1;
        out.push(good(n));
        // Every kind of failure early on (so a short session meets them all), then at random.
        let (segment, kind) = match n {
            1..=7 => ([0, 1, 2, 2, 2, 2, 2][n - 1], (n as u64 + 2) % 5),
            _ => (rng.below(4), rng.below(5)),
        };
        match segment {
            // The first outage ends each kind of wait at least once (the client retries once;
            // a kill may cost a reply that was in flight, so each kind comes more than twice).
            0 if n == 1 => {
                out.extend([
                    CannedReply::error(503, "overloaded"),
                    CannedReply::error(503, "overloaded"),
                ]);
                for _ in 0..4 {
                    out.push(
                        CannedReply::error(429, "rate limited").with_header("retry-after", "1"),
                    );
                }
                for _ in 0..4 {
                    out.push(CannedReply::error(500, "internal error"));
                }
            }
            0 => {
                for _ in 0..2 + rng.below(4) {
                    out.push(match rng.below(3) {
                        0 => CannedReply::error(500, "internal error"),
                        1 => CannedReply::error(503, "overloaded"),
                        _ => {
                            CannedReply::error(429, "rate limited").with_header("retry-after", "1")
                        }
                    });
                }
            }
            // Three in a row: the client's own retry fails too, so the loop waits.
            1 => out.extend([
                CannedReply::hang(),
                CannedReply::hang(),
                CannedReply::hang(),
            ]),
            2 => out.extend([garbage(kind), garbage(kind), garbage(kind)]),
            _ => {}
        }
    }
    out
}

const SOAK_CHANGES: usize = 16;

fn soak_toml() -> String {
    // Fast clock: a hung request is cut after 1 s, the client retries once, and the loop's
    // own waits start at 300 ms (a 429's Retry-After of 1 s is a floor).
    "[agent]\ntimeout = \"1s\"\nmax_retries = 1\nretry_base_delay = \"20ms\"\n\n\
     [loop]\nprovider_wait_min = \"300ms\"\nprovider_wait_max = \"2s\"\n\
     breaker_after = 2\nbreaker_cooldown = \"1s\"\nbreaker_trips = 50\n"
        .into()
}

fn start_args(server: &ScriptedServer) -> Vec<String> {
    [
        "start",
        "--budget",
        "15m",
        "--max-changes",
        &SOAK_CHANGES.to_string(),
        "--agent",
        "openai",
        "--model",
        "scripted",
        "--base-url",
        &server.openai_base_url(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn pauses(events: &[Event], stage: &str) -> Vec<Pause> {
    events
        .iter()
        .filter_map(|e| Pause::of(e.kind, &e.payload))
        .filter(|p| p.stage == stage)
        .collect()
}

fn timeline(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {:?} {}", e.seq, e.kind, e.change, e.payload))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn soak_outages_garbage_and_kills_while_waiting_leave_one_consistent_session() {
    soak(1);
}

/// The same night with two changes in flight: the breaker's pause waits for both to finish.
#[test]
fn soak_with_two_workers() {
    soak(2);
}

fn soak(workers: usize) {
    let began = Instant::now();
    let mut rng = Rng(0x5eed_2026_1129);
    let repo = TargetRepo::toy(&ToyOptions {
        executor: soak_toml(),
        ..ToyOptions::default()
    })
    .unwrap();
    let server = ScriptedServer::start(script(&mut rng, 400)).unwrap();
    let mut args = start_args(&server);
    args.extend(["--workers".to_string(), workers.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut kills = 0;
    let mut status_seen = false;
    let mut waits_at_kill = Vec::new();
    while kills < 10 {
        let mut child = spawn_group(repo.agentloop(BIN.as_ref(), &target_dir(), &args)).unwrap();
        let before = pauses(&repo.events().unwrap(), Pause::PROVIDER_WAIT).len();
        // The next wait for the provider, then a kill at a seeded moment inside it.
        let deadline = Instant::now() + Duration::from_secs(120);
        let wait = loop {
            let events = repo.events().unwrap_or_default();
            let waits = pauses(&events, Pause::PROVIDER_WAIT);
            if waits.len() > before {
                break waits.last().cloned();
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let Some(wait) = wait else {
            // The session ended before another wait: enough outages were survived.
            kill_group(&mut child);
            break;
        };
        if !status_seen {
            let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &["status"])).unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("waiting   for the provider since ")
                    && (text.contains("next try in ") || text.contains("trying again now")),
                "status during a wait:\n{text}"
            );
            status_seen = true;
        }
        let at = Duration::from_secs_f64(wait.wait_s * 0.9 * rng.unit());
        std::thread::sleep(at);
        kill_group(&mut child);
        kills += 1;
        waits_at_kill.push(wait.count);
    }
    assert!(kills >= 3, "only {kills} kills landed in a wait");

    // Unattended from here: the last start runs to the end of the session.
    let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &args)).unwrap();
    let events = repo.events().unwrap();
    assert!(
        out.status.success(),
        "the loop ended with an error:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        timeline(&events)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ended: max_changes"), "{stdout}");

    // One session, each decision once, the chain and every decision verify.
    let summary =
        check::consistent(&repo, "main").unwrap_or_else(|e| panic!("{e:#}\n{}", timeline(&events)));
    assert_eq!(summary.decisions.len(), SOAK_CHANGES, "{summary:?}");
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
    // No error event stopped the loop: the only session-level errors are recorded waits.
    for e in events
        .iter()
        .filter(|e| e.kind == EventKind::Error && e.change.is_none())
    {
        assert!(
            Pause::of(e.kind, &e.payload).is_some(),
            "an error that is not a wait: {}",
            e.payload
        );
    }

    let waits = pauses(&events, Pause::PROVIDER_WAIT);
    let statuses: Vec<Option<u16>> = waits.iter().map(|w| w.status).collect();
    for code in [500, 503, 429] {
        assert!(
            statuses.contains(&Some(code)),
            "no wait after HTTP {code}: {statuses:?}"
        );
    }
    let messages: Vec<&str> = waits.iter().map(|w| w.message.as_str()).collect();
    for what in [
        "did not answer within",
        "body is not JSON",
        "hex escape",
        "no `choices[0]`",
        "finish_reason: length",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(what)),
            "no wait for `{what}`: {messages:#?}"
        );
    }
    // A 429 said Retry-After: 1, and its wait honoured it.
    assert!(
        waits
            .iter()
            .filter(|w| w.status == Some(429))
            .all(|w| w.wait_s >= 1.0),
        "{waits:#?}"
    );
    // A streak continues across a kill: its count goes on and `since` stays.
    assert!(
        waits
            .windows(2)
            .any(|p| p[1].count == p[0].count + 1 && p[1].since == p[0].since),
        "no streak of failures in a row: {waits:#?}"
    );

    // The streak of unusable replies: recorded and asked again, refused, breaker paused once
    // or more, and the next proposal was told why.
    let unusable = events
        .iter()
        .filter(|e| e.kind == EventKind::Propose && e.payload.get("malformed").is_some())
        .count();
    assert!(unusable >= 4, "{unusable} unusable replies recorded");
    let refused = summary
        .decisions
        .values()
        .filter(|d| d.outcome == DecisionOutcome::PolicyRejected)
        .count();
    assert!(refused >= 2, "{refused} refused");
    let trips = pauses(&events, Pause::BREAKER_PAUSE);
    assert!(!trips.is_empty(), "the breaker never paused");
    assert!(trips[0].message.contains("consecutive"), "{trips:?}");
    let told = server
        .requests()
        .iter()
        .any(|r| r.body.contains("Why the loop paused"));
    assert!(told, "no prompt after the pause said what kept failing");
    eprintln!(
        "soak ({workers} worker(s)): {} waits, {} breaker pauses, {kills} kills (in waits {waits_at_kill:?}), {} requests, {:.0}s",
        waits.len(),
        trips.len(),
        server.requests().len(),
        began.elapsed().as_secs_f64()
    );
}

#[test]
fn fatal_provider_error_stops_at_once_naming_the_setting_to_fix() {
    let repo = TargetRepo::toy(&ToyOptions {
        executor: soak_toml(),
        ..ToyOptions::default()
    })
    .unwrap();
    for (reply, setting) in [
        (
            CannedReply::error(401, "invalid api key"),
            "`[agent] api_key_env`",
        ),
        (
            CannedReply::error(404, "model `scripted` does not exist"),
            "`[agent] model`",
        ),
    ] {
        let server = ScriptedServer::start([reply]).unwrap();
        let args = start_args(&server);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = output(repo.agentloop(BIN.as_ref(), &target_dir(), &args)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(setting), "{stderr}");
        assert_eq!(server.requests().len(), 1, "a fatal error is not retried");
        let events = repo.events().unwrap();
        let last = events.last().unwrap();
        assert_eq!(last.kind, EventKind::Error, "{}", timeline(&events));
        assert!(
            last.payload["message"].as_str().unwrap().contains(setting),
            "{}",
            last.payload
        );
        assert!(pauses(&events, Pause::PROVIDER_WAIT).is_empty());
    }
    // Still one resumable session: fixed, it goes on.
    let events = repo.events().unwrap();
    let starts = events
        .iter()
        .filter(|e| e.kind == EventKind::SessionStart)
        .count();
    assert_eq!(starts, 1);
    assert!(!events.iter().any(|e| e.kind == EventKind::SessionEnd));
}
