//! Publishing from a real-time thread (`ClientBuilder::realtime_publish`):
//! after warm-up, a million publishes of a typed pose and of a borrowed
//! `EventRef` allocate nothing and make no system call on the publishing
//! thread, and every event reaches the server.
//!
//! * Allocations: a global allocator that counts per thread.
//! * System calls: the publishing thread runs under a **seccomp filter**
//!   that traps any system call but `read` and `exit`: a futex (a
//!   wake-up, a parked lock, a contended allocator), a socket write (a
//!   direct write), a `sched_yield` or an `mmap` would stop the thread in
//!   a SIGSYS handler that records the call, and fail this test with its
//!   number. (Not `SECCOMP_MODE_STRICT`: it also disables
//!   the TSC, which the client's clock reads.) The thread reports through
//!   atomics, then blocks in `read` on a pipe until the process exits.
//! * The longest a publish waited (the outbox lock held by the sender, or
//!   the OS preempting either thread) is printed with the percentiles.
//!
//! Its own binary: the counting allocator and the seccomp thread stay out
//! of the other tests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use vuer_client::{ClientBuilder, Event, EventRef, PublishError};
use vuer_client_testkit::server::{LocalServer, ServerOptions};

struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = FREES.try_with(|c| c.set(c.get() + 1));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Allocations and frees (a free takes the allocator's lock too, and
/// may wake a thread waiting on it: a system call).
fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get) + FREES.with(Cell::get)
}

/// `class SetPosition(ClientEvent): etype = "SET_POSITION"`, every one
/// delivered.
#[derive(Serialize)]
struct SetPosition([f32; 3]);

impl Event for SetPosition {
    const ETYPE: &'static str = "SET_POSITION";
}

const WARM_UP: u64 = 200_000;
const MEASURED: u64 = 1_000_000;

/// What the publishing thread reports.
#[derive(Default)]
struct Report {
    allocations: AtomicU64,
    accepted: AtomicU64,
    full: AtomicU64,
    other_errors: AtomicU64,
    done: AtomicU64,
    /// Publish durations (ns): p50, p99, p99.99, max.
    p50: AtomicU64,
    p99: AtomicU64,
    p9999: AtomicU64,
    max: AtomicU64,
}

/// Publishes until accepted (a full queue is retried: `Full` allocates
/// nothing), timing each call.
fn publish_all(
    client: &vuer_client::Publisher,
    n: u64,
    times: Option<&mut [u32]>,
    report: &Report,
    borrowed: bool,
) {
    let mut times = times;
    let names = ["left", "right"];
    for i in 0..n {
        let x = i as f32 * 1e-3;
        let pose = [x, 0.5, -x];
        loop {
            let t0 = Instant::now();
            let r = if borrowed {
                // Keyed latest-value-wins stream: never full.
                client.publish(
                    &EventRef::floats("HAND", &pose)
                        .key(names[(i % 2) as usize])
                        .latest(),
                )
            } else {
                client.publish(&SetPosition(pose))
            };
            let dt = t0.elapsed().as_nanos().min(u32::MAX as u128) as u32;
            match r {
                Ok(()) => {
                    if let Some(t) = times.as_deref_mut() {
                        t[i as usize] = dt;
                    }
                    report.accepted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(PublishError::Full { .. }) => {
                    report.full.fetch_add(1, Ordering::Relaxed);
                    std::hint::spin_loop();
                }
                Err(_) => {
                    report.other_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// The system call a publishing thread made (0: none).
static FORBIDDEN_CALL: AtomicU64 = AtomicU64::new(0);

/// SIGSYS from the seccomp filter: records the call's number (in the
/// kernel's `siginfo_t` for SIGSYS, an int at offset 24) and stops the
/// thread there (a spin: any system call would come back here).
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS.
    let nr = unsafe { *(info as *const u8).add(24).cast::<i32>() };
    FORBIDDEN_CALL.store(nr as u64 + 1, Ordering::SeqCst);
    loop {
        std::hint::spin_loop();
    }
}

/// Installs a seccomp filter on this thread: `read`, `exit` and
/// `rt_sigreturn` are allowed, any other system call kills the process.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn forbid_system_calls() {
    use libc::{sock_filter, sock_fprog};
    const LD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let allow_if = |nr: libc::c_long| sock_filter {
        code: JEQ,
        jt: 0,
        jf: 1,
        k: nr as u32,
    };
    let allow = stmt(RET, libc::SECCOMP_RET_ALLOW);
    let mut prog = vec![
        // seccomp_data.arch: x86_64 only (else kill).
        stmt(LD, 4),
        sock_filter {
            code: JEQ,
            jt: 1,
            jf: 0,
            k: 0xC000_003E, // AUDIT_ARCH_X86_64
        },
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        // seccomp_data.nr
        stmt(LD, 0),
    ];
    for nr in [libc::SYS_read, libc::SYS_exit, libc::SYS_rt_sigreturn] {
        prog.push(allow_if(nr));
        prog.push(allow);
    }
    // Any other: SIGSYS to this thread, whose handler records the call.
    prog.push(stmt(RET, libc::SECCOMP_RET_TRAP));
    let fprog = sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: a plain sigaction with a handler that only stores to an
    // atomic and never returns.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()), 0);
    }
    // SAFETY: prctl with a valid filter program that outlives the call
    // (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const sock_fprog as libc::c_ulong,
                0,
                0
            ),
            0,
            "seccomp filter"
        );
    }
    std::mem::forget(prog); // freeing it would be a system call away
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn a_million_realtime_publishes_allocate_nothing_and_make_no_system_call() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(LocalServer::start(ServerOptions {
            decode: false,
            scene_on_init: false,
            ..ServerOptions::default()
        }))
        .unwrap();
    let client = ClientBuilder::new()
        .uri(server.uri())
        .realtime_publish(Some(Duration::from_micros(200)))
        // Bounds of a real-time stream: every chunk the queue and the
        // unconfirmed events can need is recycled (see the docs).
        .max_queued_events(16_384)
        .max_queued_bytes(1 << 20)
        .connect_blocking()
        .unwrap();
    let publisher = client.publisher();
    let report = Arc::new(Report::default());
    // The thread that must not block stays blocked in `read` at the end.
    let mut fds = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read_end, write_end) = (fds[0], fds[1]);
    let r = report.clone();
    let thread = std::thread::spawn(move || {
        let mut times = vec![0u32; MEASURED as usize];
        for borrowed in [false, true] {
            publish_all(&publisher, WARM_UP, None, &r, borrowed);
        }
        // From here on, any system call but read/exit kills the process.
        // RT_NO_SECCOMP=1 skips it, to see under `strace -f` which system
        // call killed a failing run (after the "measuring" line).
        let strict = std::env::var_os("RT_NO_SECCOMP").is_none();
        // SAFETY: write to stderr of a static buffer.
        unsafe { libc::write(2, b"measuring\n".as_ptr().cast(), 10) };
        if strict {
            forbid_system_calls();
        }
        let before = allocations();
        publish_all(&publisher, MEASURED, Some(&mut times), &r, false);
        publish_all(&publisher, MEASURED, None, &r, true);
        r.allocations
            .store(allocations() - before, Ordering::Relaxed);
        // Percentiles without allocating: sort in place.
        times.sort_unstable();
        let at = |q: f64| times[((MEASURED as f64 * q) as usize).min(times.len() - 1)] as u64;
        r.p50.store(at(0.50), Ordering::Relaxed);
        r.p99.store(at(0.99), Ordering::Relaxed);
        r.p9999.store(at(0.9999), Ordering::Relaxed);
        r.max
            .store(*times.last().unwrap() as u64, Ordering::Relaxed);
        r.done.store(1, Ordering::Release);
        let mut b = [0u8; 1];
        // SAFETY: reads into a local buffer; returns when the pipe closes.
        unsafe { libc::read(read_end, b.as_mut_ptr().cast(), 1) };
        // Not reached while the process lives (the write end stays open).
        std::mem::forget(times);
        loop {
            std::hint::spin_loop();
        }
    });
    let deadline = Instant::now()
        + Duration::from_secs(
            std::env::var("RT_DEADLINE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(240),
        );
    while report.done.load(Ordering::Acquire) == 0 {
        assert!(
            Instant::now() < deadline,
            "the publishing thread did not finish: {} accepted, {} full, stats {:?}",
            report.accepted.load(Ordering::Relaxed),
            report.full.load(Ordering::Relaxed),
            client.stats()
        );
        assert!(!thread.is_finished(), "the publishing thread died");
        let call = FORBIDDEN_CALL.load(Ordering::SeqCst);
        assert!(
            call == 0,
            "the publishing thread made system call {} (after {} publishes)",
            call - 1,
            report.accepted.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _keep_open = write_end;
    client.flush().unwrap();
    let s = client.stats();
    let reliable = WARM_UP + MEASURED;
    // Every reliable pose arrived (the keyed ones coalesce).
    let got = rt.block_on(async {
        server
            .wait_until(|st| st.frames >= reliable, Duration::from_secs(60))
            .await
    });
    println!(
        "realtime publish: {} allocations, {} accepted, {} refused as full and retried, \
         publish ns p50 {} p99 {} p99.99 {} max {}; direct writes {}, frames at the server {}",
        report.allocations.load(Ordering::Relaxed),
        report.accepted.load(Ordering::Relaxed),
        report.full.load(Ordering::Relaxed),
        report.p50.load(Ordering::Relaxed),
        report.p99.load(Ordering::Relaxed),
        report.p9999.load(Ordering::Relaxed),
        report.max.load(Ordering::Relaxed),
        s.direct_writes,
        server.stats().frames,
    );
    assert_eq!(report.allocations.load(Ordering::Relaxed), 0);
    assert_eq!(report.other_errors.load(Ordering::Relaxed), 0);
    assert_eq!(
        report.accepted.load(Ordering::Relaxed),
        2 * (WARM_UP + MEASURED)
    );
    assert_eq!(s.direct_writes, 0);
    assert_eq!(s.dropped, 0);
    assert!(
        got,
        "the server got {} frames of {reliable}",
        server.stats().frames
    );
    client.close().unwrap();
}
