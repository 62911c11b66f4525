//! Bounds the password hashes in flight. Each argon2id verification holds
//! 19 MiB and a whole core for tens of milliseconds, so a burst of sign-ins
//! must not become a pile of threads each holding its own 19 MiB: hashes
//! run on `workers` threads of their own, at most `queue` more wait for
//! one, and anything beyond that is refused at once (the portal answers
//! 503 with `Retry-After`).
//!
//! The threads are fixed, not taken from a blocking pool: each keeps the
//! memory argon2 works in (see `users`), so hashing holds `workers` x 19 MiB
//! at most, where a pool that starts a fresh thread whenever none is idle
//! would keep 19 MiB more with every thread it starts.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

pub struct HashGate {
    /// Hashes running or waiting: `workers + queue` places.
    places: Arc<Semaphore>,
    jobs: Sender<Job>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// A place at the gate: a hash running, or waiting for a worker.
pub struct Admission {
    place: OwnedSemaphorePermit,
    jobs: Sender<Job>,
    counters: Arc<Counters>,
}

#[derive(Debug, thiserror::Error)]
#[error("the password hashing workers have stopped")]
pub struct Stopped;

impl HashGate {
    /// `workers` of 0 means one per CPU core.
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let workers = match workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let (jobs, waiting) = channel::<Job>();
        let waiting = Arc::new(Mutex::new(waiting));
        for n in 0..workers {
            let waiting = waiting.clone();
            std::thread::Builder::new().name(format!("password-hash-{n}")).spawn(move || work(&waiting))?;
        }
        Ok(Self { places: Arc::new(Semaphore::new(workers + queue)), jobs, counters: Arc::default() })
    }

    /// A place, if one is free now; never waits.
    pub fn try_admit(&self) -> Option<Admission> {
        let place = self.places.clone().try_acquire_owned().ok()?;
        Some(Admission { place, jobs: self.jobs.clone(), counters: self.counters.clone() })
    }

    /// How many hashes have started.
    pub fn started(&self) -> u64 {
        self.counters.started.load(Ordering::SeqCst)
    }

    /// The most hashes that ever ran at once.
    pub fn peak(&self) -> usize {
        self.counters.peak.load(Ordering::SeqCst)
    }
}

/// A worker: runs jobs until the gate is gone.
fn work(waiting: &Mutex<Receiver<Job>>) {
    loop {
        let next = match waiting.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else {
            return;
        };
        // A job that panics loses its answer, not the worker.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

impl Admission {
    /// Runs `hash` on a worker when one is free. The place goes with the
    /// job, so a client that hangs up frees it only when the hash is done.
    pub async fn run<T: Send + 'static>(self, hash: impl FnOnce() -> T + Send + 'static) -> Result<T, Stopped> {
        let (answer, answered) = oneshot::channel();
        let (place, counters) = (self.place, self.counters);
        let job = move || {
            // Declared first, so dropped last, even when the hash panics: the
            // place is free before the waiting request hears back.
            let answer = answer;
            let place = place;
            let running = Running::start(&counters);
            let result = hash();
            drop((running, place));
            let _ = answer.send(result);
        };
        self.jobs.send(Box::new(job)).map_err(|_| Stopped)?;
        answered.await.map_err(|_| Stopped)
    }
}

/// Counts a hash as running while it lives.
struct Running<'a>(&'a Counters);

impl<'a> Running<'a> {
    fn start(counters: &'a Counters) -> Self {
        counters.started.fetch_add(1, Ordering::SeqCst);
        let running = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak.fetch_max(running, Ordering::SeqCst);
        Running(counters)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_workers_and_queue_then_refuses() {
        let gate = HashGate::new(1, 2).unwrap();
        let places: Vec<Admission> = (0..3).map(|_| gate.try_admit().expect("a place")).collect();
        assert!(gate.try_admit().is_none(), "one running and two waiting is all");
        drop(places);
        assert_eq!(gate.try_admit().unwrap().run(|| 7).await.unwrap(), 7);
        assert_eq!((gate.started(), gate.peak()), (1, 1));
        assert!(gate.try_admit().is_some(), "the place was given back");
    }

    #[tokio::test]
    async fn a_panicking_hash_loses_its_answer_not_its_worker() {
        let gate = HashGate::new(1, 0).unwrap();
        assert!(gate.try_admit().unwrap().run(|| panic!("broken hash")).await.is_err());
        assert_eq!(gate.try_admit().unwrap().run(|| 7).await.unwrap(), 7);
    }
}
