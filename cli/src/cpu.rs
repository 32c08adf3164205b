//! CPU time of a chosen set of threads (Linux), so that `bench` can report
//! the client's CPU per event without the in-process server's.
//!
//! A thread joins the set by calling [`Threads::enter`] on itself (from a
//! runtime's `on_thread_start`, or first thing in a spawned thread) and
//! leaves it with [`Threads::leave`] (`on_thread_stop`, or last thing).
//! [`Threads::total_ns`] is the CPU time, user plus system, that the set's
//! threads have used so far: for live threads it reads
//! `/proc/self/task/<tid>/schedstat` (nanoseconds; `stat`'s utime+stime in
//! clock ticks when schedstat is missing), and a thread that leaves adds
//! its final `CLOCK_THREAD_CPUTIME_ID` reading, so threads that end between
//! two readings are still counted exactly. Both sources are the kernel's
//! `sum_exec_runtime`, so the difference of two totals is the CPU used in
//! between.

use std::sync::Mutex;

/// A set of threads whose CPU time is summed.
#[derive(Debug, Default)]
pub struct Threads {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Thread ids of live members.
    live: Vec<i64>,
    /// Final CPU time of members that left, in nanoseconds.
    exited_ns: u64,
    /// Members ever seen.
    seen: usize,
}

impl Threads {
    /// An empty set.
    pub fn new() -> Threads {
        Threads::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the calling thread.
    pub fn enter(&self) {
        if let Some(tid) = current_tid() {
            let mut g = self.lock();
            g.live.push(tid);
            g.seen += 1;
        }
    }

    /// Removes the calling thread, keeping the CPU time it used.
    pub fn leave(&self) {
        let Some(tid) = current_tid() else { return };
        let cpu = own_cpu_ns();
        let mut g = self.lock();
        if let Some(i) = g.live.iter().position(|&t| t == tid) {
            g.live.swap_remove(i);
            g.exited_ns += cpu.unwrap_or(0);
        }
    }

    /// CPU time used so far by every thread that joined, in nanoseconds;
    /// `None` where it cannot be measured (not Linux, no `/proc`).
    pub fn total_ns(&self) -> Option<u64> {
        let g = self.lock();
        let mut total = g.exited_ns;
        for &tid in &g.live {
            total += task_cpu_ns(tid)?;
        }
        Some(total)
    }

    /// How many threads ever joined.
    pub fn seen(&self) -> usize {
        self.lock().seen
    }
}

#[cfg(target_os = "linux")]
fn current_tid() -> Option<i64> {
    // SAFETY: gettid has no preconditions.
    Some(unsafe { libc::syscall(libc::SYS_gettid) })
}

#[cfg(not(target_os = "linux"))]
fn current_tid() -> Option<i64> {
    None
}

/// The calling thread's CPU time.
fn own_cpu_ns() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
    }
    None
}

/// A live thread's CPU time, from /proc.
fn task_cpu_ns(tid: i64) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")) {
            if let Some(ns) = s.split_whitespace().next().and_then(|f| f.parse().ok()) {
                return Some(ns);
            }
        }
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        parse_stat_ticks(&stat).map(|ticks| {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            ticks * 1_000_000_000 / hz
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/.../stat` line; the command
/// name (field 2) may contain spaces and parentheses, so fields are counted
/// after its closing parenthesis.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed_after_the_command_name() {
        let line = "123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 70 30 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(line), Some(100));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_thread_is_counted_while_alive_and_after_it_leaves() {
        use std::sync::Arc;
        let set = Arc::new(Threads::new());
        let s = set.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            s.enter();
            // Busy until the thread itself has used 20 ms of CPU (wall time
            // says nothing on a loaded machine).
            let t0 = own_cpu_ns().unwrap();
            let mut x = 0u64;
            while own_cpu_ns().unwrap() - t0 < 20_000_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            s.leave();
            x
        });
        rx.recv().unwrap();
        let alive = set.total_ns().unwrap();
        // The thread is blocked now, so /proc is up to date.
        assert!(alive >= 20_000_000, "{alive}");
        go_tx.send(()).unwrap();
        h.join().unwrap();
        let after = set.total_ns().unwrap();
        assert!(after >= alive, "{after} < {alive}");
        assert_eq!(set.seen(), 1);
    }
}
