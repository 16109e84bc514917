//! The ceiling search of `rate` (the generator and one trial are in rate.rs): per target,
//! geometric steps (`--start-rate`, x `--factor`) up to the first failed step (down from the
//! start if it fails), then `--bisect` geometric bisections; the ceiling is the highest rate that
//! passed. Each round runs every unfinished target's next step `--reps` times, the targets
//! interleaved in rotated order, so drift on a noisy machine hits all alike. A step passes when
//! one of its repetitions passes: other load only ever adds latency, so the best repetition is
//! the target's own figure; a target's step ends at its first pass (or at a trial stopped for
//! overload on a quiet machine), so only failing steps take every repetition. `--budget-secs` bounds the whole search.
//!
//! Other load on the machine: each trial also measures the share of the CPUs used by anything
//! else than this client and the `--pid` process trees (Dovecot's, the proxies'), from
//! /proc/stat. A trial that fails while that share is over `--foreign-max` (0.2) is run again,
//! up to `--retries` (1) times, once the machine is quiet again (waiting up to
//! `--quiet-wait-secs`, 15; no retry when it stays busy); the target's row counts those failures
//! (`disturbed_failures`). `--upstream-pid` (Dovecot's master) adds the upstream's CPU per
//! command to every trial.
//!
//! Output: one JSON row per trial (`<kind>_trial`) and one per target (`<kind>`: the ceiling,
//! the lowest failed rate, the p50/p99 at the ceiling, and the target's CPU per command there
//! when `--pid NAME=PID` is given: its process tree's thread run time from schedstat).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Cfg, Conn, MIX_TEXT, Trial, logout, open_all, trial};
use crate::json::Obj;
use crate::{Args, Common, Target, rotation, stats};

/// CPU time (ns) of each root and every process below it (nginx's workers, socat's children,
/// Dovecot's imap processes): the run time of their live threads, from schedstat; `None` for a
/// root that is gone. One scan of /proc for all of them.
fn trees_cpu_ns(roots: &[u32]) -> Vec<Option<u64>> {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (the parent) follows the state, after the command name's ')'.
        let ppid = stat
            .rfind(')')
            .and_then(|p| stat.get(p + 2..)?.split(' ').nth(1)?.parse().ok());
        if let Some(pp) = ppid {
            kids.entry(pp).or_default().push(pid);
        }
    }
    let tree = |root: u32| {
        let (mut ns, mut todo) = (0u64, vec![root]);
        std::fs::metadata(format!("/proc/{root}")).ok()?;
        while let Some(p) = todo.pop() {
            for t in std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let run = std::fs::read_to_string(t.path().join("schedstat")).ok();
                ns += run
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
            }
            todo.extend(kids.get(&p).into_iter().flatten());
        }
        Some(ns)
    };
    roots.iter().map(|&r| tree(r)).collect()
}

/// Busy time of the whole machine (ns over every CPU: all but idle and iowait, steal included),
/// from /proc/stat (USER_HZ ticks: 100 per second on Linux).
fn machine_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user and nice)
    let busy: u64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy * 10_000_000)
}

/// CPU readings taken before and after a trial.
struct Cpu {
    trees: Vec<Option<u64>>,
    own: u64,
    machine: Option<u64>,
    at: Instant,
}

impl Cpu {
    /// `roots`, then kthreadd (2): the kernel's threads (ksoftirqd and kworkers doing the
    /// loopback and scheduler work this bench causes) count as the bench's own, not as others'.
    fn read(roots: &[u32]) -> Cpu {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a plain libc call with a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        Cpu {
            trees: trees_cpu_ns(&[roots, &[2]].concat()),
            own: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
            machine: machine_busy_ns(),
            at: Instant::now(),
        }
    }
}

/// What a trial cost: the target's process tree (when known), this client, and the share of the
/// machine's CPUs used meanwhile by anything else than the client, the `--pid` trees and the
/// kernel's threads.
struct Cost {
    target_ns: Option<u64>,
    /// Dovecot's (`--upstream-pid`) process tree.
    upstream_ns: Option<u64>,
    client_ns: u64,
    foreign_share: Option<f64>,
}

fn cost(b: &Cpu, a: &Cpu, root: Option<usize>, upstream: Option<usize>) -> Cost {
    let d = |i: usize| -> Option<u64> { Some(a.trees[i]?.saturating_sub(b.trees[i]?)) };
    let client_ns = a.own.saturating_sub(b.own);
    let ours = client_ns + (0..a.trees.len()).filter_map(d).sum::<u64>();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wall = a.at.duration_since(b.at).as_nanos() as f64;
    let foreign = |(m1, m0): (u64, u64)| m1.saturating_sub(m0).saturating_sub(ours) as f64;
    Cost {
        target_ns: root.and_then(d),
        upstream_ns: upstream.and_then(d),
        client_ns,
        foreign_share: a
            .machine
            .zip(b.machine)
            .map(|m| foreign(m) / (wall * cpus).max(1.0)),
    }
}

/// Waits (at most `max`) until other processes use at most `share` of the CPUs, measured over
/// 0.5 s windows while this bench is idle (between trials nothing of it runs); the last share.
async fn wait_quiet(share: f64, max: Duration) -> Option<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let until = Instant::now() + max;
    loop {
        let (b, t0) = (machine_busy_ns()?, Instant::now());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let busy = machine_busy_ns()?.saturating_sub(b) as f64;
        let now = busy / (t0.elapsed().as_nanos() as f64 * cpus);
        if now <= share || Instant::now() >= until {
            return Some(now);
        }
    }
}

/// The nearest-rank percentile `p` of sorted samples, in µs.
fn pct_us(sorted: &[u64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e3
}

/// A trial's figures the search keeps.
#[derive(Clone, Copy)]
struct Judged {
    pass: bool,
    p50_us: f64,
    p99_us: f64,
    cpu_us: Option<f64>,
    upstream_us: Option<f64>,
    /// Stopped early: over `--max-inflight` unanswered on a connection.
    stopped: bool,
}

/// The trial's JSON row, and the verdict.
fn judge(t: &mut Trial, cfg: &Cfg, c: &Cost) -> (Obj, Judged) {
    let mut o = Obj::new();
    o.num("offered_per_s", t.offered)
        .num("achieved_per_s", t.achieved)
        .int("sent", t.sent)
        .int("measured", t.samples.len() as u64)
        .int("dropped", t.dropped)
        .int("errors", t.errors)
        .bool("aborted", t.aborted);
    let mut j = Judged {
        pass: false,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        cpu_us: c.target_ns.map(|ns| ns as f64 / 1e3 / t.sent.max(1) as f64),
        upstream_us: c
            .upstream_ns
            .map(|ns| ns as f64 / 1e3 / t.sent.max(1) as f64),
        stopped: t.aborted,
    };
    if !t.samples.is_empty() {
        let s = stats(&mut t.samples);
        (j.p50_us, j.p99_us) = (s.median / 1e3, s.p99 / 1e3);
        o.num("p50_us", j.p50_us)
            .num("p90_us", s.p90 / 1e3)
            .num("p99_us", j.p99_us)
            .num("p999_us", pct_us(&t.samples, 0.999))
            .num("max_us", s.max / 1e3)
            .num("mean_us", s.mean / 1e3);
        j.pass = !t.aborted
            && t.dropped == 0
            && t.errors == 0
            && s.p99 < cfg.bound_ns as f64
            && t.achieved >= cfg.min_ratio * t.offered;
    }
    if !t.lag.is_empty() {
        t.lag.sort_unstable();
        o.num("send_lag_p99_us", pct_us(&t.lag, 0.99));
    }
    if let Some(c) = j.cpu_us {
        o.num("cpu_us_per_cmd", c);
    }
    if let Some(c) = j.upstream_us {
        o.num("upstream_cpu_us_per_cmd", c);
    }
    o.num(
        "client_cpu_us_per_cmd",
        c.client_ns as f64 / 1e3 / t.sent.max(1) as f64,
    )
    .num("foreign_cpu_share", c.foreign_share.unwrap_or(f64::NAN))
    .bool("pass", j.pass);
    if let Some(e) = &t.first_error {
        o.str("first_error", e);
    }
    (o, j)
}

/// One target's search.
#[derive(Default)]
struct Search {
    /// The highest passed rate and its best trial; the lowest failed rate.
    lo: Option<(f64, Judged)>,
    hi: Option<f64>,
    next: Option<f64>,
    bisected: u32,
    trials: u64,
    /// Failed trials while other processes used over `--foreign-max` of the CPUs.
    disturbed: u64,
}

struct Knobs {
    start: f64,
    factor: f64,
    bisect: u32,
    max_rate: f64,
    min_rate: f64,
}

impl Search {
    /// Records a step (`best`: its best passing repetition) and picks the next rate, if any.
    fn step(&mut self, rate: f64, best: Option<Judged>, k: &Knobs) {
        match best {
            Some(j) => self.lo = Some((rate, j)),
            None => self.hi = Some(rate),
        }
        self.next = match (self.lo, self.hi) {
            (_, None) => Some(rate * k.factor).filter(|&r| r <= k.max_rate),
            (None, Some(_)) => Some(rate / k.factor).filter(|&r| r >= k.min_rate),
            (Some((lo, _)), Some(hi)) if self.bisected < k.bisect && hi / lo > 1.02 => {
                self.bisected += 1;
                Some((lo * hi).sqrt())
            }
            _ => None,
        }
        .map(f64::round);
    }
}

/// What every trial of a search shares.
struct Ctx<'a> {
    kind: String,
    targets: &'a [Target],
    cfg: Cfg,
    n_conns: usize,
    /// The `--pid` roots, and each target's index among them.
    roots: Vec<u32>,
    root_of: Vec<Option<usize>>,
    upstream: Option<usize>,
}

/// Runs trial `rep` of target `ti` at `rate`, prints its row and a progress line; its verdict
/// and the share of the CPUs other processes used meanwhile.
async fn one_trial(
    x: &Ctx<'_>,
    pool: &mut Vec<Conn>,
    ti: usize,
    rate: f64,
    (round, rep, attempt): (usize, usize, u32),
) -> Result<(Judged, Option<f64>), String> {
    let t = &x.targets[ti];
    let before = Cpu::read(&x.roots);
    let (c, mut tr) = trial(std::mem::take(pool), rate, &x.cfg)
        .await
        .map_err(|e| format!("{}: {e}", t.name))?;
    *pool = c;
    let cost = cost(&before, &Cpu::read(&x.roots), x.root_of[ti], x.upstream);
    let (mut o, j) = judge(&mut tr, &x.cfg, &cost);
    o.str("kind", &format!("{}_trial", x.kind))
        .str("target", &t.name)
        .int("round", round as u64)
        .int("rep", rep as u64)
        .int("attempt", attempt as u64)
        .int("connections", x.n_conns as u64);
    println!("{}", o.render());
    let note = match (tr.aborted, tr.errors) {
        (true, _) => format!(" (stopped: over {} in flight)", x.cfg.max_inflight),
        (false, 0) => String::new(),
        (false, n) => format!(" ({n} failed)"),
    };
    eprintln!(
        "rate: {:<14} {:>6.0}/s offered {:>6.0}/s achieved  p50 {:>6.0} us  p99 {:>7.0} us  \
         others {:>3.0}% CPU  {}{note}",
        t.name,
        rate,
        tr.achieved,
        j.p50_us,
        j.p99_us,
        cost.foreign_share.unwrap_or(f64::NAN) * 100.0,
        if j.pass { "pass" } else { "FAIL" },
    );
    Ok((j, cost.foreign_share))
}

async fn search(a: &Args, common: &Common, targets: &[Target]) -> Result<(), String> {
    let n_conns: usize = a.num("connections", 50)?.max(1);
    let cfg = Cfg {
        secs: a.num("secs", 3.0)?,
        warmup_secs: a.num("warmup-secs", 0.5)?,
        uids: a.num("uids", 11)?,
        max_inflight: a.num("max-inflight", 64)?,
        drain: Duration::from_secs_f64(a.num("drain-secs", 10.0)?),
        bound_ns: (a.num("p99-ms", 10.0)? * 1e6) as u64,
        min_ratio: a.num("min-ratio", 0.95)?,
    };
    let k = Knobs {
        start: a.num("start-rate", 1000.0)?,
        factor: a.num("factor", 2.0f64)?.max(1.05),
        bisect: a.num("bisect", 3)?,
        max_rate: a.num("max-rate", 200_000.0)?,
        min_rate: a.num("min-rate", 50.0)?,
    };
    let reps: usize = a.num("reps", 2)?.max(1);
    let budget = Duration::from_secs_f64(a.num("budget-secs", 600.0)?);
    // A failed trial while other processes used more than this share of the CPUs is run again
    // (at most --retries times, after waiting up to --quiet-wait-secs for the share to drop):
    // the machine, not the target, was the limit.
    let foreign_max: f64 = a.num("foreign-max", 0.2)?;
    let retries: u32 = a.num("retries", 1)?;
    let quiet_wait = Duration::from_secs_f64(a.num("quiet-wait-secs", 15.0)?);
    let (mut roots, mut root_of) = (Vec::new(), vec![None; targets.len()]);
    for p in a.all("pid") {
        let (name, pid) = p.split_once('=').ok_or("--pid NAME=PID")?;
        let ti = targets.iter().position(|t| t.name == name);
        let ti = ti.ok_or_else(|| format!("--pid {p}: no such target"))?;
        root_of[ti] = Some(roots.len());
        roots.push(pid.parse::<u32>().map_err(|_| format!("--pid {p}"))?);
    }
    // Dovecot's master: its tree (every imap process) is measured in every trial.
    let upstream = match a.get("upstream-pid") {
        Some(p) => {
            roots.push(
                p.parse::<u32>()
                    .map_err(|_| format!("--upstream-pid {p}"))?,
            );
            Some(roots.len() - 1)
        }
        None => None,
    };
    let x = Ctx {
        kind: a.str_or("kind", "rate"),
        targets,
        cfg,
        n_conns,
        roots,
        root_of,
        upstream,
    };
    let mut pool = Vec::new();
    for t in targets {
        pool.push(open_all(common, t, n_conns).await?);
        eprintln!(
            "rate: {} ({}): {n_conns} connections selected",
            t.name, t.addr
        );
    }
    let warm = Cfg {
        secs: cfg.warmup_secs.max(0.5),
        ..cfg
    };
    for (ti, t) in targets.iter().enumerate() {
        let (c, _) = trial(std::mem::take(&mut pool[ti]), k.start, &warm)
            .await
            .map_err(|e| format!("{}: {e}", t.name))?;
        pool[ti] = c;
    }
    let mut s: Vec<Search> = targets
        .iter()
        .map(|_| Search {
            next: Some(k.start),
            ..Default::default()
        })
        .collect();
    let began = Instant::now();
    let per_trial = cfg.secs + cfg.warmup_secs + 0.3;
    let (mut round, mut out_of_time) = (0usize, false);
    loop {
        let active: Vec<usize> = (0..targets.len())
            .filter(|&i| s[i].next.is_some())
            .collect();
        if active.is_empty() {
            break;
        }
        let need = Duration::from_secs_f64(per_trial * (active.len() * reps) as f64);
        if began.elapsed() + need > budget {
            out_of_time = true;
            eprintln!("rate: budget of {budget:?} reached: search stopped");
            break;
        }
        let mut best: Vec<Option<Judged>> = vec![None; targets.len()];
        // A step is settled by a pass, or by a trial stopped for overload on a quiet machine.
        let mut settled = vec![false; targets.len()];
        for rep in 0..reps {
            for ai in rotation(active.len(), round * reps + rep) {
                let ti = active[ai];
                if settled[ti] {
                    continue;
                }
                let rate = s[ti].next.unwrap_or(k.start);
                for attempt in 0..=retries {
                    if began.elapsed() > budget {
                        out_of_time = true;
                        break;
                    }
                    let at = (round, rep, attempt);
                    let (j, others) = one_trial(&x, &mut pool[ti], ti, rate, at).await?;
                    s[ti].trials += 1;
                    if j.pass && best[ti].is_none_or(|b| j.p99_us < b.p99_us) {
                        best[ti] = Some(j);
                    }
                    let quiet = others.is_none_or(|o| o <= foreign_max);
                    settled[ti] = j.pass || (j.stopped && quiet);
                    if j.pass || quiet {
                        break;
                    }
                    s[ti].disturbed += 1;
                    if attempt == retries {
                        break;
                    }
                    // Again once the machine is quiet; not at all if it does not get quiet.
                    let now = wait_quiet(foreign_max, quiet_wait).await.unwrap_or(1.0);
                    if now > foreign_max {
                        eprintln!("rate: disturbed; still {:.0}% busy: no retry", now * 100.0);
                        break;
                    }
                    eprintln!("rate: disturbed by other processes; again");
                }
            }
        }
        if out_of_time {
            eprintln!("rate: budget of {budget:?} reached: search stopped");
            break;
        }
        for &ti in &active {
            let rate = s[ti].next.unwrap_or(k.start);
            s[ti].step(rate, best[ti], &k);
        }
        round += 1;
    }
    for (ti, t) in targets.iter().enumerate() {
        let st = &s[ti];
        let mut o = Obj::new();
        o.str("kind", &x.kind)
            .str("target", &t.name)
            .str("addr", &t.addr)
            .str("client", if t.tls { "tls" } else { "plain" })
            .num("p99_bound_ms", cfg.bound_ns as f64 / 1e6)
            .int("connections", n_conns as u64)
            .num("secs_per_trial", cfg.secs)
            .int("reps", reps as u64)
            .num("foreign_max", foreign_max)
            .int("trials", st.trials)
            .int("disturbed_failures", st.disturbed)
            .bool("complete", !out_of_time || st.next.is_none())
            .str("mix", MIX_TEXT);
        match st.lo {
            Some((rate, j)) => {
                o.num("ceiling_per_s", rate)
                    .num("p50_us", j.p50_us)
                    .num("p99_us", j.p99_us);
                if let Some(c) = j.cpu_us {
                    o.num("cpu_us_per_cmd", c);
                }
                if let Some(c) = j.upstream_us {
                    o.num("upstream_cpu_us_per_cmd", c);
                }
            }
            None => {
                o.num("ceiling_per_s", f64::NAN);
            }
        }
        o.num("first_fail_per_s", st.hi.unwrap_or(f64::NAN));
        println!("{}", o.render());
    }
    logout(pool.into_iter().flatten()).await;
    Ok(())
}

pub fn run(a: &Args) -> Result<(), String> {
    let common = Common::new(a)?;
    let targets = a.targets()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(search(a, &common, &targets))
}
