//! The ceiling search of `rate` (the generator and one trial are in rate.rs): per target,
//! geometric steps (`--start-rate`, x `--factor`) up to the first failed step (down from the
//! start if it fails), then `--bisect` geometric bisections; the ceiling is the highest rate that
//! passed. Each round runs every unfinished target's next step `--reps` times, the targets
//! interleaved in rotated order, so drift on a noisy machine hits all alike. A step passes when
//! one of its repetitions passes: other load only ever adds latency, so the best repetition is
//! the target's own figure. `--budget-secs` bounds the whole search.
//!
//! Output: one JSON row per trial (`<kind>_trial`) and one per target (`<kind>`: the ceiling,
//! the lowest failed rate, the p50/p99 at the ceiling, and the target's CPU per command there
//! when `--pid NAME=PID` is given: its process tree's thread run time from schedstat).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Cfg, MIX_TEXT, Trial, logout, open_all, trial};
use crate::json::Obj;
use crate::{Args, Common, Target, rotation, stats};

/// CPU time (ns) of `root` and every process below it (nginx's workers, socat's children): the
/// run time of their live threads, from schedstat.
fn tree_cpu_ns(root: u32) -> Option<u64> {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
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
    let (mut ns, mut todo) = (0u64, vec![root]);
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let run = std::fs::read_to_string(t.path().join("schedstat")).ok();
            ns += run
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
        }
        todo.extend(kids.get(&p).into_iter().flatten());
    }
    Some(ns)
}

/// This process's CPU time (ns, every thread).
fn own_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain libc call with a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
}

/// The trial's JSON row, and the verdict.
fn judge(t: &mut Trial, cfg: &Cfg, cpu_ns: Option<u64>, client_ns: u64) -> (Obj, Judged) {
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
        cpu_us: cpu_ns.map(|ns| ns as f64 / 1e3 / t.sent.max(1) as f64),
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
    o.num(
        "client_cpu_us_per_cmd",
        client_ns as f64 / 1e3 / t.sent.max(1) as f64,
    )
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

async fn search(a: &Args, common: &Common, targets: &[Target]) -> Result<(), String> {
    let kind = a.str_or("kind", "rate");
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
    let mut pids = HashMap::new();
    for p in a.all("pid") {
        let (name, pid) = p.split_once('=').ok_or("--pid NAME=PID")?;
        pids.insert(
            name.to_string(),
            pid.parse::<u32>().map_err(|_| format!("--pid {p}"))?,
        );
    }
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
        let conns = std::mem::take(&mut pool[ti]);
        let (c, _) = trial(conns, k.start, &warm)
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
    let mut round = 0usize;
    let mut out_of_time = false;
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
        for rep in 0..reps {
            for ai in rotation(active.len(), round * reps + rep) {
                let ti = active[ai];
                let (t, rate) = (&targets[ti], s[ti].next.unwrap_or(k.start));
                let pid = pids.get(&t.name).copied();
                let (cpu0, own0) = (pid.and_then(tree_cpu_ns), own_cpu_ns());
                let conns = std::mem::take(&mut pool[ti]);
                let (c, mut tr) = trial(conns, rate, &cfg)
                    .await
                    .map_err(|e| format!("{}: {e}", t.name))?;
                pool[ti] = c;
                let cpu = match (cpu0, pid.and_then(tree_cpu_ns)) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                    _ => None,
                };
                let (mut o, j) = judge(&mut tr, &cfg, cpu, own_cpu_ns() - own0);
                s[ti].trials += 1;
                if j.pass && best[ti].is_none_or(|b| j.p99_us < b.p99_us) {
                    best[ti] = Some(j);
                }
                o.str("kind", &format!("{kind}_trial"))
                    .str("target", &t.name)
                    .int("round", round as u64)
                    .int("rep", rep as u64)
                    .int("connections", n_conns as u64);
                println!("{}", o.render());
                eprintln!(
                    "rate: {:<14} {:>7.0}/s offered {:>7.0}/s achieved  p50 {:>7.0} us  p99 {:>8.0} us  {}{}",
                    t.name,
                    rate,
                    tr.achieved,
                    j.p50_us,
                    j.p99_us,
                    if j.pass { "pass" } else { "FAIL" },
                    match (tr.aborted, tr.errors) {
                        (true, _) => format!(" (stopped: over {} in flight)", cfg.max_inflight),
                        (false, 0) => String::new(),
                        (false, n) => format!(" ({n} failed)"),
                    }
                );
            }
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
        o.str("kind", &kind)
            .str("target", &t.name)
            .str("addr", &t.addr)
            .str("client", if t.tls { "tls" } else { "plain" })
            .num("p99_bound_ms", cfg.bound_ns as f64 / 1e6)
            .int("connections", n_conns as u64)
            .num("secs_per_trial", cfg.secs)
            .int("reps", reps as u64)
            .int("trials", st.trials)
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
