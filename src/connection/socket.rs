//! TCP socket options and `TCP_INFO` (Linux).
//!
//! The handle keeps the socket's raw descriptor. It is owned by the sender
//! task together with the write half, which keeps the socket open, so the
//! descriptor is valid whenever the handle is used. On other platforms the
//! options are no-ops and `info` returns `None`.

use tokio::net::TcpStream;

/// Socket tuning: see [`ClientBuilder::notsent_lowat`](crate::ClientBuilder::notsent_lowat)
/// and [`ClientBuilder::send_buffer`](crate::ClientBuilder::send_buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// `TCP_NOTSENT_LOWAT` in bytes (default [`DEFAULT_NOTSENT_LOWAT`]).
    pub notsent_lowat: Option<u32>,
    /// `SO_SNDBUF` in bytes (default: the kernel's auto-tuning).
    pub send_buffer: Option<u32>,
}

/// The default `TCP_NOTSENT_LOWAT`: 128 KiB. See
/// [`ClientBuilder::notsent_lowat`](crate::ClientBuilder::notsent_lowat).
pub const DEFAULT_NOTSENT_LOWAT: u32 = 128 * 1024;

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            notsent_lowat: Some(DEFAULT_NOTSENT_LOWAT),
            send_buffer: None,
        }
    }
}

/// What the kernel reports about a TCP connection (the fields the tests
/// look at from `struct tcp_info`). The client itself reads only the send
/// queue (`SIOCOUTQ`): keepalive counts frames, not acknowledgements.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked_segments: u32,
    /// Bytes written by us and acknowledged by the peer, since connect.
    pub bytes_acked: u64,
    /// Bytes received from the peer, since connect.
    pub bytes_received: u64,
    /// Bytes in the send queue not yet sent.
    pub notsent_bytes: u32,
    /// The peer's advertised receive window, bytes (0 if the kernel does not
    /// report it).
    pub snd_wnd: u32,
    /// Sender maximum segment size.
    pub snd_mss: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketHandle {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::RawFd,
}

#[cfg(all(test, target_os = "linux"))]
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    head: [u8; 8],
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
}

impl SocketHandle {
    /// A handle to no socket, for tests that run a task over an in-memory
    /// stream: every query answers `None`, every option is a logged no-op.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        #[cfg(target_os = "linux")]
        {
            SocketHandle { fd: -1 }
        }
        #[cfg(not(target_os = "linux"))]
        {
            SocketHandle {}
        }
    }

    pub(crate) fn new(stream: &TcpStream) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            SocketHandle {
                fd: stream.as_raw_fd(),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = stream;
            SocketHandle {}
        }
    }

    /// Applies the options; failures are logged, not fatal (the connection
    /// works without them, only with more data held in the kernel).
    pub(crate) fn apply(&self, opts: &SocketOptions) {
        #[cfg(target_os = "linux")]
        {
            if let Some(v) = opts.notsent_lowat {
                self.set_u32(
                    libc::IPPROTO_TCP,
                    libc::TCP_NOTSENT_LOWAT,
                    v,
                    "TCP_NOTSENT_LOWAT",
                );
            }
            if let Some(v) = opts.send_buffer {
                self.set_u32(libc::SOL_SOCKET, libc::SO_SNDBUF, v, "SO_SNDBUF");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = opts;
    }

    #[cfg(target_os = "linux")]
    fn set_u32(&self, level: libc::c_int, name: libc::c_int, v: u32, what: &str) {
        let v = v as libc::c_int;
        // SAFETY: fd is a live socket (see module docs); the option value is
        // a c_int passed by pointer with its size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                level,
                name,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::warn!(option = what, error = %std::io::Error::last_os_error(), "setsockopt failed");
        }
    }

    /// Bytes in the send queue (unacknowledged plus not yet sent).
    pub(crate) fn outq(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            let mut v: libc::c_int = 0;
            // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int.
            let rc = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &mut v) };
            (rc == 0).then_some(v as u32)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Reads `TCP_INFO`.
    #[cfg(test)]
    pub(crate) fn info(&self) -> Option<TcpInfo> {
        #[cfg(target_os = "linux")]
        {
            let mut raw = RawTcpInfo::default();
            let mut len = std::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
            // SAFETY: the kernel writes at most `len` bytes into `raw`, a
            // plain-old-data struct laid out as its `struct tcp_info`.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    &mut raw as *mut RawTcpInfo as *mut libc::c_void,
                    &mut len,
                )
            };
            if rc != 0 {
                return None;
            }
            let have = |end: usize| (len as usize) >= end;
            let snd_wnd_end = std::mem::offset_of!(RawTcpInfo, snd_wnd) + 4;
            let notsent_end = std::mem::offset_of!(RawTcpInfo, notsent_bytes) + 4;
            Some(TcpInfo {
                rtt_us: raw.rtt,
                unacked_segments: raw.unacked,
                bytes_acked: raw.bytes_acked,
                bytes_received: raw.bytes_received,
                notsent_bytes: if have(notsent_end) {
                    raw.notsent_bytes
                } else {
                    0
                },
                snd_wnd: if have(snd_wnd_end) { raw.snd_wnd } else { 0 },
                snd_mss: raw.snd_mss,
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn get_u32(h: &SocketHandle, level: libc::c_int, name: libc::c_int) -> u32 {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a live socket; one c_int out, its size passed.
        let rc = unsafe {
            libc::getsockopt(
                h.fd,
                level,
                name,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        v as u32
    }

    /// Connects to a peer that never reads and writes until the socket
    /// refuses more; returns the bytes the kernel holds unsent then.
    async fn unsent_when_full(opts: SocketOptions) -> (u32, u32) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (client, _peer) = (client.unwrap(), server.unwrap());
        let h = SocketHandle::new(&client);
        h.apply(&opts);
        let lowat = get_u32(&h, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT);
        let chunk = vec![0u8; 16 * 1024];
        let mut accepted = 0usize;
        // Bounded: a peer that never reads lets in at most the buffers.
        while accepted < 256 << 20 {
            match client.try_write(&chunk) {
                Ok(n) => accepted += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        (lowat, h.info().unwrap().notsent_bytes)
    }

    #[tokio::test]
    async fn default_limits_what_the_kernel_holds_unsent() {
        let (lowat, unsent) = unsent_when_full(SocketOptions::default()).await;
        assert_eq!(lowat, DEFAULT_NOTSENT_LOWAT);
        // The kernel stops taking writes past the mark (plus at most one
        // write's worth that was in progress).
        assert!(unsent <= DEFAULT_NOTSENT_LOWAT + 64 * 1024, "{unsent}");
        let (_, unlimited) = unsent_when_full(SocketOptions {
            notsent_lowat: None,
            send_buffer: None,
        })
        .await;
        eprintln!("unsent when full: limited {unsent} B, unlimited {unlimited} B");
        assert!(
            unlimited > 2 * unsent,
            "limited {unsent}, unlimited {unlimited}"
        );
    }
}
