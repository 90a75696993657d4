//! The Slurm executor against a real one-node Slurm cluster started by the test (see
//! `agentloop_tests::slurm`): runs submitted from several threads at once, every way a job can
//! end, and `agentloop start` with `kind = "slurm"`: jobs in the ledger, a job killed with
//! scancel recorded as crashed while the loop goes on, and a loop SIGKILLed mid-run that
//! re-attaches to its job on restart instead of submitting it again.
//!
//! One cluster serves every check, in sequence, in one test.

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentloop::executor::budget::Stop;
use agentloop::executor::config::SlurmConfig;
use agentloop::executor::process::Exit;
use agentloop::executor::{Executor, Ran, RunJob, SlurmExecutor};
use agentloop_guardrails::run_policy::DivergenceRule;
use agentloop_ledger::EventKind;
use agentloop_tests::slurm::{Cluster, QueuedJob};
use agentloop_tests::toy::ToyOptions;
use agentloop_tests::{check, kill_group, kinds, TargetRepo};

agentloop_tests::e2e_paths!();

/// One check, run against the shared cluster in a directory of its own.
type Step = fn(&Cluster, &Path);

#[test]
fn slurm_executor_on_a_real_cluster() {
    let cluster = Cluster::start().unwrap();
    // The executor's sbatch/squeue (in this process and in the agentloop processes below)
    // talk to the test's cluster. Set once, before any other thread of this test exists.
    std::env::set_var("SLURM_CONF", cluster.conf());
    let work = tempfile::tempdir().unwrap();

    let steps: [(&str, Step); 7] = [
        ("concurrent runs", concurrent_runs_keep_to_the_slots),
        ("ends", every_end_of_a_job_maps_to_its_exit),
        ("lost job", a_job_lost_with_its_node_is_submitted_again),
        (
            "collect after death",
            a_finished_uncollected_job_is_collected_not_rerun,
        ),
        ("sbatch errors", a_failing_sbatch_is_an_error_naming_it),
        (
            "loop with scancel",
            loop_runs_as_jobs_and_survives_a_scancel,
        ),
        ("re-attach", restarted_loop_reattaches_to_its_running_job),
    ];
    for (name, step) in steps {
        let dir = work.path().join(name.replace(' ', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        step(&cluster, &dir);
        eprintln!(
            "slurm step {name:?}: {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
}

fn executor(slots: usize, config: SlurmConfig) -> SlurmExecutor {
    SlurmExecutor::new(config, slots).expect("sbatch is available")
}

fn job(dir: &Path, name: &str, command: &str, timeout: Duration) -> RunJob {
    let out = dir.join(name);
    RunJob {
        command: command.replace("{out}", &out.display().to_string()),
        cwd: dir.to_path_buf(),
        env: vec![("GREETING".into(), "hello from the job".into())],
        timeout,
        memory_limit: Some(256 << 20),
        divergence: None,
        out,
        name: name.into(),
    }
}

fn job_id(ran: &Ran) -> String {
    let id = ran
        .worker
        .strip_prefix("slurm:")
        .unwrap_or_else(|| panic!("worker {:?} is not a slurm job", ran.worker));
    assert!(id.chars().all(|c| c.is_ascii_digit()), "{}", ran.worker);
    id.to_string()
}

/// The jobcomp file gets a job's line as the job completes; give it a moment.
fn finished_state(cluster: &Cluster, id: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(s) = cluster.finished_state(id) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "job {id} is not among the finished jobs:\n{}",
            cluster.finished_jobs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_left_queue(cluster: &Cluster, id: &str) {
    let queue = cluster.queue().unwrap();
    assert!(
        queue.iter().all(|j| j.id != id),
        "job {id} still queued: {queue:?}"
    );
}

/// Four runs from four threads through a two-slot executor: all complete as separate jobs,
/// with their output, and never more than two run at once.
fn concurrent_runs_keep_to_the_slots(cluster: &Cluster, dir: &Path) {
    let exec = executor(2, SlurmConfig::default());
    let ran: Mutex<Vec<(String, Ran)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..4 {
            let (exec, ran) = (&exec, &ran);
            s.spawn(move || {
                let j = job(
                    dir,
                    &format!("run-{i}"),
                    "date +%s.%N > {out}/t0; echo \"$GREETING\"; sleep 1.5; date +%s.%N > {out}/t1",
                    Duration::from_secs(60),
                );
                let r = exec.run(&j, &Stop::never()).unwrap();
                ran.lock().unwrap().push((j.out.display().to_string(), r));
            });
        }
    });
    let ran = ran.into_inner().unwrap();
    let mut ids: Vec<String> = ran.iter().map(|(_, r)| job_id(r)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four distinct jobs: {ids:?}");
    let mut spans = Vec::new();
    for (out, r) in &ran {
        assert_eq!(r.exit, Exit::Code(Some(0)), "{}", r.tail);
        assert!(r.tail.contains("hello from the job"), "{}", r.tail);
        assert_eq!(finished_state(cluster, &job_id(r)), "COMPLETED");
        let read = |f: &str| -> f64 {
            std::fs::read_to_string(Path::new(out).join(f))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        spans.push((read("t0"), read("t1")));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(Path::new(out).join("slurm-job.json")).unwrap())
                .unwrap();
        assert_eq!(record["job_id"], job_id(r));
        assert_eq!(record["phase"], "collected");
    }
    let most_at_once = spans
        .iter()
        .map(|&(t0, _)| spans.iter().filter(|&&(a, b)| a <= t0 && t0 < b).count())
        .max()
        .unwrap();
    assert_eq!(most_at_once, 2, "runs at once with two slots: {spans:?}");
}

fn every_end_of_a_job_maps_to_its_exit(cluster: &Cluster, dir: &Path) {
    let exec = executor(4, SlurmConfig::default()).with_timeout_grace(Duration::ZERO);
    let minute = Duration::from_secs(60);
    // The trainer's own codes come through: 3 is "diverged".
    let r = exec
        .run(
            &job(dir, "diverged", "echo nan; exit 3", minute),
            &Stop::never(),
        )
        .unwrap();
    assert_eq!(r.exit, Exit::Code(Some(3)));
    assert!(
        r.tail.contains(&format!(
            "slurm job {} ended FAILED (exit code 3)",
            job_id(&r)
        )),
        "{}",
        r.tail
    );

    // A run whose streamed loss goes NaN and then hangs: the same watch as a local run reads
    // the job's log, cancels the job and records the run as diverged, long before any timeout.
    let mut watched = job(
        dir,
        "nan-then-hang",
        "echo '{\"event\":\"step\",\"step\":1,\"loss\":null}'; sleep 60",
        minute,
    );
    watched.divergence = Some(DivergenceRule::default());
    let r = exec.run(&watched, &Stop::never()).unwrap();
    assert!(
        matches!(&r.exit, Exit::Diverged(_)),
        "{:?}: {}",
        r.exit,
        r.tail
    );
    assert!(r.tail.contains("the run diverged"), "{}", r.tail);
    assert_left_queue(cluster, &job_id(&r));

    // Over the train timeout: cancelled by the loop's side, gone from the queue.
    let r = exec
        .run(
            &job(dir, "slow", "sleep 60", Duration::from_secs(1)),
            &Stop::never(),
        )
        .unwrap();
    assert_eq!(r.exit, Exit::TimedOut, "{}", r.tail);
    assert_left_queue(cluster, &job_id(&r));

    // The loop stopping: the running job is cancelled and the run is not a result.
    let stop = Stop::new();
    let r = std::thread::scope(|s| {
        let stopper = stop.clone();
        s.spawn(move || {
            wait_for_job(cluster, "agentloop-stopped", Duration::from_secs(30));
            stopper.request("test");
        });
        exec.run(&job(dir, "stopped", "sleep 60", minute), &stop)
            .unwrap()
    });
    assert_eq!(r.exit, Exit::Stopped);
    assert_left_queue(cluster, &job_id(&r));
    let record = std::fs::read_to_string(dir.join("stopped/slurm-job.json")).unwrap();
    assert!(record.contains("\"cancelled\""), "{record}");

    // Someone else's scancel: the run crashed, and the reason names the state and the job.
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let id = wait_for_job(cluster, "agentloop-killed", Duration::from_secs(30));
            cluster.cancel(&id).unwrap();
        });
        exec.run(&job(dir, "killed", "sleep 60", minute), &Stop::never())
            .unwrap()
    });
    assert_eq!(r.exit, Exit::Code(None));
    assert!(
        r.tail
            .contains(&format!("slurm job {} ended CANCELLED", job_id(&r))),
        "{}",
        r.tail
    );
}

/// The node fails under a running job (set DOWN: Slurm ends its jobs NODE_FAIL): the run is
/// submitted again, the lost job is kept in slurm-job.json and noted in the log, and the run
/// completes as the new job.
fn a_job_lost_with_its_node_is_submitted_again(cluster: &Cluster, dir: &Path) {
    // Without --no-requeue Slurm would requeue the job itself (same id), which the executor
    // simply keeps waiting for; with it the executor's own resubmission is what saves the run.
    let exec = executor(
        1,
        SlurmConfig {
            sbatch_options: vec!["--no-requeue".into()],
            ..SlurmConfig::default()
        },
    );
    let node = |state: &str| {
        cluster
            .output(
                "scontrol",
                &[
                    "update",
                    "nodename=localhost",
                    &format!("state={state}"),
                    "reason=agentloop-test",
                ],
            )
            .map(drop)
    };
    let (r, lost) = std::thread::scope(|s| {
        let failer = s.spawn(|| {
            let id = wait_for_job(cluster, "agentloop-lost", Duration::from_secs(30));
            node("down").unwrap();
            // Back in service once the job has failed (slurmd is alive, so it returns at once
            // or on resume).
            let start = Instant::now();
            while cluster.output("sinfo", &["-h", "-o", "%T"]).unwrap().trim() != "idle" {
                let _ = node("resume");
                assert!(start.elapsed() < Duration::from_secs(30), "node stays down");
                std::thread::sleep(Duration::from_millis(200));
            }
            id
        });
        let r = exec
            .run(
                &job(
                    dir,
                    "lost",
                    "echo attempt; sleep 2",
                    Duration::from_secs(60),
                ),
                &Stop::never(),
            )
            .unwrap();
        (r, failer.join().unwrap())
    });
    assert_eq!(r.exit, Exit::Code(Some(0)), "{}", r.tail);
    let second = job_id(&r);
    assert_ne!(second, lost, "the run completed as a new job");
    assert_eq!(cluster.finished_state(&lost).as_deref(), Some("NODE_FAIL"));
    assert!(
        r.tail.contains(&format!(
            "slurm job {lost} ended NODE_FAIL; resubmitted as job {second} (retry 1 of 2)"
        )),
        "{}",
        r.tail
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("lost/slurm-job.json")).unwrap()).unwrap();
    assert_eq!(record["job_id"], second);
    assert_eq!(record["retries"][0]["job_id"], lost);
    assert_eq!(record["retries"][0]["state"], "NODE_FAIL");
}

/// Rewrites the run's slurm-job.json as a loop that died before taking the result leaves it.
fn mark_uncollected(out: &Path, job_id: Option<&str>) {
    let path = out.join("slurm-job.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["phase"] = "submitted".into();
    if let Some(id) = job_id {
        record["job_id"] = id.into();
    }
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
}

/// The loop died after its job finished and before it took the result: the same run again
/// collects that job (no new one); another script, a taken result, or a job the cluster does
/// not know mean a new job.
fn a_finished_uncollected_job_is_collected_not_rerun(cluster: &Cluster, dir: &Path) {
    let exec = executor(1, SlurmConfig::default());
    let minute = Duration::from_secs(60);
    let first = job(dir, "again", "echo first run; exit 3", minute);
    let r1 = exec.run(&first, &Stop::never()).unwrap();
    assert_eq!(r1.exit, Exit::Code(Some(3)));
    let id = job_id(&r1);

    mark_uncollected(&first.out, None);
    let r2 = exec.run(&first, &Stop::never()).unwrap();
    assert_eq!(job_id(&r2), id, "collected, not submitted again");
    assert_eq!(r2.exit, Exit::Code(Some(3)));
    assert_eq!(cluster.finished_named("agentloop-again"), 1);

    // Taken already (a retry of a recorded run): a new job.
    let r3 = exec.run(&first, &Stop::never()).unwrap();
    assert_ne!(job_id(&r3), id);

    // Another script in the same directory: a new job, into a cleared directory.
    mark_uncollected(&first.out, None);
    std::fs::write(first.out.join("stale"), "").unwrap();
    let changed = job(dir, "again", "echo second run", minute);
    let r4 = exec.run(&changed, &Stop::never()).unwrap();
    assert_eq!(r4.exit, Exit::Code(Some(0)));
    assert!(![id.clone(), job_id(&r3)].contains(&job_id(&r4)));
    assert!(!first.out.join("stale").exists());

    // A job the cluster has never heard of, with no exit code left behind: run it again.
    mark_uncollected(&changed.out, Some("999999"));
    std::fs::remove_file(changed.out.join("exit_code")).unwrap();
    let r5 = exec.run(&changed, &Stop::never()).unwrap();
    assert_eq!(r5.exit, Exit::Code(Some(0)), "{}", r5.tail);
    assert_ne!(job_id(&r5), "999999");
    assert_eq!(cluster.finished_named("agentloop-again"), 4);
}

/// A setup problem (here a partition the cluster does not have) stops with sbatch's own words.
fn a_failing_sbatch_is_an_error_naming_it(_cluster: &Cluster, dir: &Path) {
    let exec = executor(
        1,
        SlurmConfig {
            partition: Some("no-such-partition".into()),
            ..SlurmConfig::default()
        },
    );
    let err = exec
        .run(
            &job(dir, "refused", "true", Duration::from_secs(60)),
            &Stop::never(),
        )
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("sbatch --parsable") && text.contains("--partition=no-such-partition"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("partition"), "{text}");
}

/// Waits for a running job whose name contains `name`; its id.
fn wait_for_job(cluster: &Cluster, name: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(j) = cluster
            .queue()
            .unwrap()
            .into_iter()
            .find(|j| j.name.contains(name) && j.state == "RUNNING")
        {
            return j.id;
        }
        assert!(
            start.elapsed() < timeout,
            "no running job named *{name}*: {:?}\n{}",
            cluster.queue(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a running job of the loop `child` (whose output goes to `log`).
fn wait_for_running(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
    child: &mut Child,
    log: &Path,
) -> QueuedJob {
    let start = Instant::now();
    loop {
        if let Some(j) = cluster
            .queue()
            .unwrap()
            .into_iter()
            .find(|j| j.name.contains(name) && j.state == "RUNNING")
        {
            return j;
        }
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none() && start.elapsed() < timeout,
            "no running job named *{name}* (loop exited: {exited:?}):\n{}\n{}",
            std::fs::read_to_string(log).unwrap_or_default(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn slurm_toy() -> TargetRepo {
    TargetRepo::toy(&ToyOptions {
        run_sleep_s: 0.5,
        executor: "[executor]\nkind = \"slurm\"\nslots = 1\n".into(),
        ..ToyOptions::default()
    })
    .unwrap()
}

/// `agentloop` on the repo, in its own process group, output to `log`.
fn spawn_loop(repo: &TargetRepo, args: &[&str], log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::create(log).unwrap();
    repo.agentloop(BIN.as_ref(), &target_dir(), args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .process_group(0)
        .spawn()
        .unwrap()
}

fn wait_ok(mut child: Child, log: &Path) {
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "agentloop failed ({status}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Every run_result's worker is a job the cluster ran; returns worker → exit_status.
fn runs_are_slurm_jobs(cluster: &Cluster, repo: &TargetRepo) -> Vec<(String, String)> {
    let events = repo.events().unwrap();
    let runs = kinds(&events, EventKind::RunResult);
    assert!(runs.len() >= 8, "{} runs", runs.len());
    runs.iter()
        .map(|e| {
            let worker = e.payload["worker"].as_str().unwrap_or_default().to_string();
            let id = worker
                .strip_prefix("slurm:")
                .unwrap_or_else(|| panic!("run without a slurm job: {}", e.payload));
            finished_state(cluster, id);
            (
                worker,
                e.payload["exit_status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ledger_verifies(repo: &TargetRepo) {
    repo.verify_with_cli(BIN.as_ref(), &target_dir()).unwrap();
}

/// (a) + (b): a short session whose runs are all Slurm jobs; the first candidate job is
/// killed with scancel while it runs: that run is crashed, its change decided as such, and
/// the loop goes on to decide the next change.
fn loop_runs_as_jobs_and_survives_a_scancel(cluster: &Cluster, dir: &Path) {
    let repo = slurm_toy();
    let log = dir.join("agentloop.log");
    let args = [
        "start",
        "--budget",
        "10m",
        "--max-changes",
        "2",
        "--agent",
        "offline",
    ];
    let mut child = spawn_loop(&repo, &args, &log);
    let killed = wait_for_running(
        cluster,
        "-candidate-",
        Duration::from_secs(120),
        &mut child,
        &log,
    )
    .id;
    cluster.cancel(&killed).unwrap();
    wait_ok(child, &log);

    let summary = check::consistent(&repo, "main").unwrap();
    assert_eq!(summary.decisions.len(), 2, "{summary:?}");
    let runs = runs_are_slurm_jobs(cluster, &repo);
    let killed_worker = format!("slurm:{killed}");
    let killed_runs: Vec<_> = runs.iter().filter(|(w, _)| *w == killed_worker).collect();
    assert_eq!(killed_runs.len(), 1, "{runs:?}");
    assert_eq!(killed_runs[0].1, "crashed");
    assert_eq!(
        cluster.finished_state(&killed).as_deref(),
        Some("CANCELLED")
    );
    let crashed = summary
        .decisions
        .values()
        .filter(|d| serde_json::to_value(d.outcome).unwrap() == "crashed")
        .count();
    assert_eq!(crashed, 1, "{summary:?}");
    assert!(
        runs.iter().filter(|(_, s)| s == "ok").count() >= 6,
        "{runs:?}"
    );
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        output.contains("training runs execute on: slurm"),
        "{output}"
    );
    ledger_verifies(&repo);
}

/// (c): the loop is SIGKILLed while a job runs; restarted, it waits for that same job and
/// records its result, and no second job is submitted for the run.
fn restarted_loop_reattaches_to_its_running_job(cluster: &Cluster, dir: &Path) {
    let repo = slurm_toy();
    let args = [
        "start",
        "--budget",
        "10m",
        "--max-changes",
        "1",
        "--agent",
        "offline",
    ];
    let log = dir.join("first.log");
    let mut child = spawn_loop(&repo, &args, &log);
    let QueuedJob {
        id: running, name, ..
    } = wait_for_running(
        cluster,
        "agentloop-",
        Duration::from_secs(120),
        &mut child,
        &log,
    );
    kill_group(&mut child);
    let recorded_before = kinds(&repo.events().unwrap(), EventKind::RunResult)
        .iter()
        .filter(|e| e.payload["worker"] == format!("slurm:{running}"))
        .count();
    assert_eq!(recorded_before, 0, "the run was in flight at the kill");

    let log = dir.join("resumed.log");
    wait_ok(spawn_loop(&repo, &args, &log), &log);
    let resumed_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        resumed_log.contains(&format!("re-attaching to slurm job {running}")),
        "{resumed_log}"
    );
    check::consistent(&repo, "main").unwrap();
    let runs = runs_are_slurm_jobs(cluster, &repo);
    let worker = format!("slurm:{running}");
    assert_eq!(
        runs.iter()
            .filter(|(w, s)| *w == worker && s == "ok")
            .count(),
        1,
        "the run is recorded with the job that ran at the kill: {runs:?}"
    );
    assert_eq!(
        cluster.finished_named(&name),
        1,
        "one job for the run {name}:\n{}",
        cluster.finished_jobs()
    );
    ledger_verifies(&repo);
}
