//! A `dns` listener's two sockets, UDP and TCP on one port, both with SO_REUSEPORT and
//! steered to the newest socket of the port, like every other listener, so that a new
//! process or a changed listener takes over before the old one stops.

use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

/// The sockets of one `dns` listener.
#[derive(Debug)]
pub struct Sockets {
    /// Queries over UDP.
    pub udp: UdpSocket,
    /// Queries over TCP.
    pub tcp: TcpListener,
}

impl Sockets {
    /// The address both sockets are bound to.
    ///
    /// Fails as `getsockname` does.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// How often an ephemeral port is tried for a UDP socket to join.
const EPHEMERAL_TRIES: usize = 16;

/// Binds UDP and TCP at `addr`. Port 0 (tests) takes one free port for both.
///
/// Fails when either cannot be bound.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<Sockets> {
    let mut last = None;
    for _ in 0..EPHEMERAL_TRIES {
        let tcp = super::super::reuseport_listener(addr, backlog)?;
        let port = tcp.local_addr()?.port();
        match udp_socket(SocketAddr::new(addr.ip(), port)) {
            Ok(udp) => return Ok(Sockets { udp, tcp }),
            // Another process has the UDP side of this ephemeral port: try another.
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

#[cfg(target_os = "linux")]
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(family, SockType::Datagram, flags, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    if let Err(error) = super::super::steer_to_newest(&fd) {
        tracing::debug!(%addr, %error, "cannot steer new datagrams to the newest socket");
    }
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

#[cfg(not(target_os = "linux"))]
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}
