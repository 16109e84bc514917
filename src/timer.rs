//! Timers for code that may run on a session thread, and the hand-off of work that needs
//! tokio's own.
//!
//! Session threads ([`crate::workers`]) run tokio without its time driver. With it, every park
//! of a thread (about one per two commands under load) locked and walked the timer wheel and read
//! the clock, ~300 instructions a command, for timers that almost never fire: a session's idle
//! deadline, a handshake's, a login's. Their timers are kept instead by one keeper thread
//! ([`Keeper`]): deadlines and wakers in a sorted map, touched only when a timer is armed,
//! dropped or fires, never at a park. A kept timer is a 24-byte entry in that map and no more
//! (every idle session holds one, its idle deadline, so this is per-session memory): it tells
//! it fired by the clock when polled. That reading is the thread's last ([`now`]: the relay
//! reads the clock once per wake-up, before its timer is polled), read afresh only when the
//! keeper fired some timer since: a stale reading is earlier than the true time, so it can only
//! make a timer late, and a timer it makes late is one the keeper has not fired yet, which it
//! will. Anywhere else (the main runtime, tests) tokio's timers are used as they are.
//!
//! Everything a session awaits with a deadline comes through here ([`sleep_until`], [`sleep`],
//! [`timeout`], [`timeout_at`]); `clippy.toml` refuses tokio's own functions in this crate. Work
//! whose libraries arm tokio timers inside (the OAuth token service: hyper, redis) and a stage's
//! decision that takes time ([`Verdict::Wait`](crate::phases::Verdict)) run on the main runtime,
//! handed over by [`offload`].

#![allow(clippy::disallowed_methods)] // The one place tokio's timers are called.

use std::cell::{Cell, OnceCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

thread_local! {
    /// Set on session threads only (their runtime has no time driver): the main runtime, with
    /// tokio's timers, where [`offload`]ed work runs.
    static MAIN_RUNTIME: OnceCell<Handle> = const { OnceCell::new() };
}

/// The keeper of every session thread's timers (one for the process).
static KEEPER: OnceLock<Keeper> = OnceLock::new();

/// How many times the keeper has fired timers: a clock reading taken before the latest firing
/// may be older than a fired timer's deadline.
static FIRINGS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The thread's last clock reading through [`now`], with [`FIRINGS`] as loaded before it.
    static LAST_READING: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Reads the clock, and keeps the reading for the kept timers polled on this thread after it
/// (the relay calls this once per wake-up: one clock reading serves both).
pub fn now() -> Instant {
    // Loaded before the clock is read: a firing after the load makes the reading stale, one
    // before it happened before the reading (a fired deadline is then in the past).
    let firings = FIRINGS.load(Ordering::Acquire);
    let now = Instant::now();
    LAST_READING.with(|r| r.set(Some((now, firings))));
    now
}

/// The thread's last clock reading unless the keeper fired since (then the clock, read now).
/// Never later than the true time.
fn recent() -> Instant {
    let firings = FIRINGS.load(Ordering::Acquire);
    match LAST_READING.with(Cell::get) {
        Some((at, seen)) if seen == firings => at,
        _ => now(),
    }
}

/// Makes the calling thread a session thread: its timers are kept by the keeper thread
/// (started on the first call) and [`offload`]ed work runs on `main`. Called once per session
/// thread, before its runtime runs anything.
pub fn enter_session_thread(main: Handle) -> std::io::Result<()> {
    KEEPER.get_or_init(Keeper::new).start()?;
    MAIN_RUNTIME.with(|m| {
        let _ = m.set(main);
    });
    Ok(())
}

/// Whether the calling thread is a session thread.
fn on_session_thread() -> bool {
    MAIN_RUNTIME.with(|m| m.get().is_some())
}

/// A timer that completes at its deadline. Like `tokio::time::Sleep`, on any thread.
#[must_use = "a timer does nothing unless awaited"]
#[derive(Debug)]
pub struct Sleep {
    /// Which clock keeps it.
    inner: SleepInner,
}

/// Who keeps a [`Sleep`].
#[derive(Debug)]
enum SleepInner {
    /// tokio's time driver (threads whose runtime has one).
    Tokio(Pin<Box<tokio::time::Sleep>>),
    /// The keeper thread (session threads).
    Kept(Kept),
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    let inner = if on_session_thread() {
        SleepInner::Kept(Kept {
            deadline,
            armed: None,
            fired: false,
        })
    } else {
        SleepInner::Tokio(Box::pin(tokio::time::sleep_until(deadline.into())))
    };
    Sleep { inner }
}

/// Completes after `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(duration))
}

/// Now plus `duration`, or far in the future when that overflows (as tokio does).
fn deadline_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().inner {
            SleepInner::Tokio(sleep) => sleep.as_mut().poll(cx),
            SleepInner::Kept(kept) => kept.poll(cx),
        }
    }
}

/// A timer armed with the keeper thread.
#[derive(Debug)]
struct Kept {
    /// When it completes.
    deadline: Instant,
    /// Once polled before its deadline: its key with the keeper, and the waker the keeper
    /// holds (to tell whether a later poll's differs).
    armed: Option<(u64, Waker)>,
    /// It completed.
    fired: bool,
}

impl Kept {
    /// Ready once the clock says the deadline passed: each poll looks at the thread's recent
    /// reading ([`recent`]), so that a timer costs its entry in the keeper's map and no flag of
    /// its own (an idle session holds one, its idle deadline).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired || recent() >= self.deadline {
            self.fired = true;
            self.disarm();
            return Poll::Ready(());
        }
        let Some(keeper) = KEEPER.get() else {
            // (Kept timers are made on session threads only, which start the keeper first.)
            return Poll::Pending;
        };
        match &mut self.armed {
            Some((key, waker)) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                    keeper.rewake(*key, cx.waker().clone());
                }
            }
            None => {
                let key = keeper.arm(self.deadline, cx.waker().clone());
                self.armed = Some((key, cx.waker().clone()));
            }
        }
        Poll::Pending
    }

    /// Takes its entry out of the keeper, if it is still there.
    fn disarm(&mut self) {
        if let (Some((key, _)), Some(keeper)) = (self.armed.take(), KEEPER.get()) {
            keeper.disarm(key);
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The armed timers of every session thread, and the thread that fires them.
#[derive(Debug)]
struct Keeper {
    /// Deadlines are kept as nanoseconds since this (an 8-byte key per timer, not 24).
    epoch: Instant,
    /// The timers, in deadline order.
    timers: Mutex<Timers>,
    /// Signalled when a timer is armed ahead of all the others (the thread sleeps too long
    /// otherwise).
    earlier: Condvar,
    /// The thread was started.
    started: Mutex<bool>,
}

/// The keeper's table.
#[derive(Debug, Default)]
struct Timers {
    /// The wakers of armed timers by deadline in nanoseconds since the epoch (a timer whose
    /// nanosecond is taken gets the next free one: a nanosecond late, never early). 24 bytes an
    /// entry: every idle session holds one (its idle deadline), so this is per-session memory.
    by_deadline: BTreeMap<u64, Waker>,
}

impl Keeper {
    fn new() -> Keeper {
        Keeper {
            epoch: Instant::now(),
            timers: Mutex::default(),
            earlier: Condvar::new(),
            started: Mutex::new(false),
        }
    }

    /// Starts the keeper thread, once.
    fn start(&'static self) -> std::io::Result<()> {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if !*started {
            std::thread::Builder::new()
                .name("imapgate-timer".into())
                .spawn(move || self.run())?;
            *started = true;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Timers> {
        // A panic while holding it leaves a consistent map (every change is one call).
        self.timers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `at` as the map's key part: nanoseconds since the epoch (0 before it; saturated past
    /// 584 years).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Arms a timer; its key.
    fn arm(&self, deadline: Instant, waker: Waker) -> u64 {
        let mut at = self.nanos(deadline);
        let mut timers = self.lock();
        while timers.by_deadline.contains_key(&at) {
            at = at.saturating_add(1);
        }
        let first = timers
            .by_deadline
            .first_key_value()
            .is_none_or(|(&first, _)| at < first);
        timers.by_deadline.insert(at, waker);
        drop(timers);
        if first {
            self.earlier.notify_one();
        }
        at
    }

    /// A timer's task is now woken by `waker` (if it has not fired).
    fn rewake(&self, key: u64, waker: Waker) {
        if let Some(held) = self.lock().by_deadline.get_mut(&key) {
            *held = waker;
        }
    }

    /// Forgets a timer (if it has not fired).
    fn disarm(&self, key: u64) {
        let removed = self.lock().by_deadline.remove(&key);
        // Dropped outside the lock (a waker's drop may do anything).
        drop(removed);
    }

    /// The keeper thread: fires what is due, then sleeps until the next deadline or until a
    /// timer is armed ahead of it.
    fn run(&self) {
        let mut timers = self.lock();
        loop {
            let now = self.nanos(Instant::now());
            let mut due = Vec::new();
            while let Some(entry) = timers.by_deadline.first_entry() {
                if *entry.key() > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                drop(timers);
                // Before the wakes: the woken timers read the clock afresh.
                FIRINGS.fetch_add(1, Ordering::Release);
                due.into_iter().for_each(Waker::wake);
                timers = self.lock();
                continue;
            }
            let next = timers.by_deadline.first_key_value().map(|(&at, _)| at);
            timers = match next {
                Some(at) => {
                    self.earlier
                        .wait_timeout(timers, Duration::from_nanos(at.saturating_sub(now)))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .earlier
                    .wait(timers)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// The deadline passed before the work completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline has elapsed")]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// `work`, given up at a deadline. Like `tokio::time::Timeout`, on any thread.
    #[must_use = "a timeout does nothing unless awaited"]
    pub struct Timeout<F> {
        #[pin]
        work: F,
        deadline: Sleep,
    }
}

/// `work`, or [`Elapsed`] if it has not completed within `duration`.
pub fn timeout<F: Future>(duration: Duration, work: F) -> Timeout<F> {
    timeout_at(deadline_after(duration), work)
}

/// `work`, or [`Elapsed`] if it has not completed by `deadline`.
pub fn timeout_at<F: Future>(deadline: Instant, work: F) -> Timeout<F> {
    Timeout {
        work,
        deadline: sleep_until(deadline),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The work first: work that is ready at the deadline counts as done.
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(this.deadline).poll(cx).map(|()| Err(Elapsed))
    }
}

/// Runs `work` where tokio's timers are: on the main runtime when called on a session thread
/// (the result comes back across threads; dropping the returned future cancels the work),
/// here otherwise.
pub async fn offload<F>(work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(main) = MAIN_RUNTIME.with(|m| m.get().cloned()) else {
        return work.await;
    };
    // The session's span goes with it: what the work logs carries the session's fields.
    let work = tracing::Instrument::instrument(work, crate::telemetry::session_span());
    let mut task = AbortOnDrop(main.spawn(work));
    match (&mut task.0).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the main runtime is shutting down, and this session with it (its own
        // deadlines still fire here).
        Err(_) => std::future::pending().await,
    }
}

/// A task on another runtime, aborted when its result is no longer awaited.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current-thread runtime without tokio's timers, on a new thread made a session thread
    /// (the main runtime is the test's own).
    fn run_on_session_thread<T: Send + 'static>(
        main: Handle,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            enter_session_thread(main).expect("keeper");
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("runtime")
                .block_on(work)
        })
        .join()
        .expect("session thread")
    }

    #[test]
    fn kept_timers_fire_in_order_and_timeouts_give_up() {
        let main = tokio::runtime::Runtime::new().expect("main");
        let order = run_on_session_thread(main.handle().clone(), async {
            let start = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            // Armed latest-first: each earlier deadline must wake the keeper early.
            for ms in [60u64, 40, 20] {
                let tx = tx.clone();
                tokio::spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    let _ = tx.send(ms);
                });
            }
            drop(tx);
            let mut order = Vec::new();
            while let Some(ms) = rx.recv().await {
                assert!(
                    start.elapsed() >= Duration::from_millis(ms),
                    "{ms} ms early"
                );
                order.push(ms);
            }
            // A timeout gives up on work that never ends, and not on work that does.
            let never = timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
            assert_eq!(never, Err(Elapsed));
            let done = timeout(Duration::from_secs(60), async { 7 }).await;
            assert_eq!(done, Ok(7));
            // A deadline already past completes at once.
            sleep_until(start).await;
            // Two timers of the same nanosecond both fire (the second is kept a nanosecond on).
            let at = Instant::now() + Duration::from_millis(5);
            tokio::join!(sleep_until(at), sleep_until(at));
            assert!(Instant::now() >= at);
            order
        });
        assert_eq!(order, [20, 40, 60]);
    }

    #[test]
    fn a_stale_reading_makes_a_timer_late_never_lost_or_early() {
        let main = tokio::runtime::Runtime::new().expect("main");
        run_on_session_thread(main.handle().clone(), async {
            // A reading kept by `now`, then a timer due just after it: polled while the
            // reading is still the thread's (nothing fired since), it is not due; the keeper
            // fires it, and the next poll reads the clock afresh.
            let read = now();
            let at = read + Duration::from_millis(3);
            let mut timer = std::pin::pin!(sleep_until(at));
            assert!(poll_once(&mut timer).await.is_pending());
            std::thread::sleep(Duration::from_millis(5));
            // The clock is past the deadline, but this thread's reading is not, and the
            // keeper's firing may not have happened yet: still due later, never early.
            let _ = poll_once(&mut timer).await;
            timeout_at(Instant::now() + Duration::from_secs(10), timer)
                .await
                .expect("the keeper fired it");
            assert!(Instant::now() >= at);
            // A reading taken after a deadline settles a timer at its first poll.
            let at = Instant::now() + Duration::from_millis(1);
            std::thread::sleep(Duration::from_millis(2));
            let _ = now();
            assert!(
                poll_once(&mut std::pin::pin!(sleep_until(at)))
                    .await
                    .is_ready()
            );
        });
    }

    #[test]
    fn dropped_timers_leave_the_keeper() {
        let main = tokio::runtime::Runtime::new().expect("main");
        run_on_session_thread(main.handle().clone(), async {
            assert!(on_session_thread());
            let keeper = KEEPER.get().expect("keeper");
            // Polled once (armed), then dropped: its entry goes. (The keeper is shared with
            // other tests: only this timer's own entry is looked at.)
            let mut armed = sleep(Duration::from_secs(3600));
            assert!(poll_once(&mut armed).await.is_pending());
            let SleepInner::Kept(Kept {
                armed: Some((key, _)),
                ..
            }) = &armed.inner
            else {
                panic!("not armed with the keeper: {armed:?}")
            };
            let key = *key;
            assert!(keeper.lock().by_deadline.contains_key(&key));
            drop(armed);
            assert!(!keeper.lock().by_deadline.contains_key(&key));
        });
    }

    /// Polls `f` once.
    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }

    #[test]
    fn offloaded_work_runs_on_the_main_runtime_with_its_timers() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("main-rt")
            .enable_all()
            .build()
            .expect("main");
        let name = run_on_session_thread(main.handle().clone(), async {
            offload(async {
                // tokio's own timer: would panic on the session thread's runtime.
                tokio::time::sleep(Duration::from_millis(1)).await;
                std::thread::current().name().map(str::to_owned)
            })
            .await
        });
        assert_eq!(name.as_deref(), Some("main-rt"));
        // Elsewhere the work runs where it is awaited.
        let here = main.block_on(offload(async { std::thread::current().id() }));
        assert_eq!(here, std::thread::current().id());
    }
}
