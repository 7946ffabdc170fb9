//! A handed-over connection's first bytes and failed ends: peeking what the client sent
//! during the handshake (a dial's first bytes), taking it once the channel is open, and
//! closing as a reset when the channel failed; what a `pipe`'s standard input already holds.

use std::io;

use rustix::net::RecvFlags;

use super::{Input, LocalSocket, LocalStdio};

impl LocalSocket {
    /// Makes closing this connection a reset, not a clean end (TCP; a Unix socket closed
    /// with unread data reads as reset already): for a connection whose channel failed.
    pub fn reset_on_drop(&self) {
        if let Self::Tcp(s) = self {
            crate::services::io::reset_on_drop(s);
        }
    }

    /// Copies what the client has already sent into `buf` without taking it from the socket
    /// and without waiting; 0 when nothing is ready (or on an error, which the splice that
    /// follows meets again). A dial's first bytes ([`nullport_node::FirstBytes::Ready`]):
    /// they stay in the socket until [`LocalSocket::discard_peeked`], so a dial that fails
    /// closes a socket with unread data, which the client sees as a reset, not a clean end.
    pub fn peek_ready(&self, buf: &mut [u8]) -> usize {
        let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
        let peeked = match self {
            Self::Tcp(s) => rustix::net::recv(s, buf, flags),
            Self::Unix(s) => rustix::net::recv(s, buf, flags),
        };
        peeked.map(|(n, _)| n).unwrap_or(0)
    }

    /// Takes from the socket the `n` bytes [`LocalSocket::peek_ready`] copied (they went out
    /// as the channel's first bytes). Nothing else reads the socket meanwhile, so they are
    /// there; anything else is an error.
    pub fn discard_peeked(&self, mut n: usize) -> io::Result<()> {
        let mut buf = vec![0u8; n.min(64 * 1024)];
        while n > 0 {
            let want = n.min(buf.len());
            let taken = match self {
                Self::Tcp(s) => rustix::net::recv(s, &mut buf[..want], RecvFlags::DONTWAIT),
                Self::Unix(s) => rustix::net::recv(s, &mut buf[..want], RecvFlags::DONTWAIT),
            };
            match taken {
                Ok((0, _)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok((got, _)) => n -= got,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl LocalStdio {
    /// Reads what standard input already holds into `buf`, without waiting: a `pipe`'s
    /// first bytes ([`nullport_node::FirstBytes::Ready`]). A pipe cannot give bytes back, so
    /// they are taken: if the dial then fails, `pipe` fails with them consumed, as it would
    /// had it read them itself. 0 when nothing is ready, for a regular file (read through
    /// blocking calls off the runtime, so not here), or on an error (which the splice that
    /// follows meets again).
    pub fn take_ready(&self, buf: &mut [u8]) -> usize {
        let taken = match &self.input {
            Input::Pipe(r) => r.try_read(buf),
            Input::Socket(s) => s.try_recv(buf),
            Input::File(_) => return 0,
        };
        taken.unwrap_or(0)
    }
}
