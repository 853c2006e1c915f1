//! The kernel's floor for fan-out: what it costs to write one frame to one idle TCP socket
//! with a plain non-blocking `write(2)`, nothing else (no runtime, no wakeups, no framing).
//! The propagation report puts the relay's CPU per change per subscriber next to it; the
//! difference is what the relay's own machinery (task wakeups, broadcast, metrics) costs.
//!
//! Measured on loopback like the relay's streams, so the kernel's delivery to the receiving
//! socket (which runs in the writer's context on loopback) is in both figures. The clock is
//! the writing thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`); receivers are drained between
//! rounds, outside the clock, so socket buffers never fill.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

use serde::Serialize;

/// The result of [`measure`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Floor {
    /// Idle sockets written to.
    pub sockets: usize,
    /// Times each was written to.
    pub rounds: u32,
    /// Bytes per write.
    pub frame_bytes: usize,
    /// CPU time per write, microseconds.
    pub cpu_us_per_write: f64,
    /// Wall-clock time per write, microseconds (the machine is shared: CPU time is the
    /// figure to compare).
    pub wall_us_per_write: f64,
}

/// Opens `sockets` loopback connections and writes `frame` to each of them, `rounds` times
/// (at least 1), timing only the writes.
pub fn measure(frame: &[u8], sockets: usize, rounds: u32) -> std::io::Result<Floor> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(sockets);
    let mut readers = Vec::with_capacity(sockets);
    for _ in 0..sockets.max(1) {
        let w = TcpStream::connect(addr)?;
        let (r, _) = listener.accept()?;
        w.set_nodelay(true)?;
        w.set_nonblocking(true)?;
        r.set_nonblocking(true)?;
        writers.push(w);
        readers.push(r);
    }
    let rounds = rounds.max(1);
    let mut cpu_ns = 0u128;
    let mut wall_ns = 0u128;
    let mut sink = vec![0u8; 64 * 1024];
    for _ in 0..rounds {
        let wall = std::time::Instant::now();
        let cpu = thread_cpu_ns();
        for w in &mut writers {
            match w.write(frame) {
                Ok(n) if n == frame.len() => {}
                Ok(n) => {
                    return Err(std::io::Error::other(format!(
                        "short write of {n} of {} bytes to an idle socket",
                        frame.len()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        cpu_ns += thread_cpu_ns().saturating_sub(cpu);
        wall_ns += wall.elapsed().as_nanos();
        for r in &mut readers {
            loop {
                match r.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let writes = (writers.len() as f64) * f64::from(rounds);
    Ok(Floor {
        sockets: writers.len(),
        rounds,
        frame_bytes: frame.len(),
        cpu_us_per_write: cpu_ns as f64 / 1_000.0 / writes,
        wall_us_per_write: wall_ns as f64 / 1_000.0 / writes,
    })
}

fn thread_cpu_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u128::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(t.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_socket_every_round_and_costs_something() {
        let frame = b"event: patch\nid: 7\ndata: {\"version\":7}\n\n";
        let f = measure(frame, 16, 5).unwrap();
        assert_eq!((f.sockets, f.rounds, f.frame_bytes), (16, 5, frame.len()));
        assert!(f.cpu_us_per_write > 0.0, "{f:?}");
        assert!(f.wall_us_per_write >= f.cpu_us_per_write * 0.5, "{f:?}");
    }
}
