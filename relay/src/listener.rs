//! The relay's listening socket and its file-descriptor budget.
//!
//! - [`raise_nofile_limit`]: every SDK stream holds one file descriptor, and the soft
//!   `RLIMIT_NOFILE` a service manager or shell hands a process (often 1,024 or 20,000) is
//!   usually far below the hard limit. The relay raises its soft limit to the hard limit at
//!   start (and logs both), so the limit an operator configured is the one that applies.
//! - [`bind`]: the listener, optionally with `SO_REUSEPORT` (`VEXIL_REUSE_PORT`), so that
//!   several relay processes on one host share one port and the kernel spreads new
//!   connections over them: past one process's descriptors and one process's cores, without a
//!   load balancer in front.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`):
/// reconnect storms of tens of thousands of SDKs arrive faster than one accept loop runs.
const BACKLOG: u32 = 4096;

/// The soft `RLIMIT_NOFILE` before and after [`raise_nofile_limit`], and the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit found at start (`None`: unlimited).
    pub before: Option<u64>,
    /// Soft limit now.
    pub after: Option<u64>,
    /// Hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. An unlimited hard limit is not a value
/// the kernel accepts for `RLIMIT_NOFILE` (it caps it at `fs.nr_open`); the soft limit is then
/// left as it is.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    let after = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            let mut raised = limit;
            raised.current = Some(hard);
            setrlimit(Resource::Nofile, raised).map_err(io::Error::from)?;
            getrlimit(Resource::Nofile).current
        }
        _ => before,
    };
    Ok(NofileLimit {
        before,
        after,
        hard: limit.maximum,
    })
}

/// Binds `addr` and listens, with `SO_REUSEPORT` when `reuse_port` is set (then every process
/// bound to the port with it receives a share of new connections; Linux only lets processes
/// of the same user join).
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted relay rebinds while old connections linger in
    // TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let l = raise_nofile_limit().unwrap();
        assert_eq!(l.after, l.hard.or(l.before));
        // Idempotent: a second call finds nothing to raise.
        let again = raise_nofile_limit().unwrap();
        assert_eq!(again.before, again.after);
    }

    #[tokio::test]
    async fn two_listeners_share_a_port_only_with_reuse_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        // Without the option on the newcomer the port is taken.
        assert!(bind(addr, false).is_err());
        // Both accept: connections go to one or the other, never refused.
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = tokio::select! {
            a = first.accept() => a,
            a = second.accept() => a,
        };
        assert_eq!(
            accepted.unwrap().1,
            client.local_addr().unwrap(),
            "the connection reached one of the two listeners"
        );
    }
}
