//! Handing file descriptors to the daemon over its control socket (`SCM_RIGHTS`, as
//! OpenSSH's connection multiplexing does), so that `nullport connect` and `nullport pipe`
//! do not copy every byte through a process of their own: the daemon splices the local
//! socket (or the caller's standard input and output) to the channel itself.
//!
//! The request line travels with the descriptors in one `sendmsg`; the daemon reads every
//! request line with `recvmsg`, at most [`MAX_FDS`] descriptors per control connection.
//!
//! The daemon never changes the flags of a descriptor it is given, since the file
//! description may be shared with the user's terminal or other processes:
//! - sockets are read and written with `MSG_DONTWAIT` (per call, not per description), except
//!   a connection `connect` accepted, which is non-blocking already and then the daemon's
//!   alone;
//! - pipes and terminals are reopened by the client (`/proc/self/fd/N`), which makes a new
//!   file description that is the daemon's alone, non-blocking from the start; the daemon
//!   refuses such a descriptor if it is not non-blocking;
//! - regular files (and devices that cannot be polled, such as `/dev/null`) are read and
//!   written with blocking calls on tokio's blocking threads (they do not block for long).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustix::fs::{FileType, OFlags};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

mod first_bytes;

/// Most descriptors one control connection may hand to the daemon (`pipe`: standard input
/// and output).
pub const MAX_FDS: usize = 2;

/// What went wrong passing descriptors, or with the descriptors passed.
#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    /// The client sent more descriptors than a request may carry.
    #[error("more than {max} file descriptors sent on one control connection")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The request takes a different number of descriptors than were sent.
    #[error("this request takes {expected} file descriptor(s), {got} were sent")]
    Count {
        /// What the request takes.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// Bytes followed the request line before the daemon answered.
    #[error("bytes after the request line before the answer")]
    Pipelined,
    /// The request line is longer than the daemon reads.
    #[error("request line longer than {0} bytes")]
    TooLong(usize),
    /// The daemon already serves as many handed-over connections as it allows.
    #[error("the daemon already serves {0} handed-over connections; try again later")]
    Busy(usize),
    /// A descriptor the daemon cannot serve as asked.
    #[error("{what}: {reason}")]
    Unusable {
        /// Which descriptor.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The control socket failed.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
}

/// Writes `bytes` to `stream` with `fds` attached to the first of them.
pub async fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        stream.writable().await?;
        let attach = if sent == 0 { fds } else { &[] };
        let result = stream.try_io(Interest::WRITABLE, || {
            let mut space =
                vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(attach.len()))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !attach.is_empty() && !control.push(SendAncillaryMessage::ScmRights(attach)) {
                return Err(io::Error::other(
                    "too many file descriptors for one message",
                ));
            }
            rustix::net::sendmsg(
                stream,
                &[io::IoSlice::new(&bytes[sent..])],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match result {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one request line (up to and with its `\n`, at most `max` bytes) from `stream` with
/// `recvmsg`, and the descriptors sent with it. An empty line: the client went away first.
pub async fn read_line_with_fds(
    stream: &UnixStream,
    max: usize,
) -> Result<(Vec<u8>, Vec<OwnedFd>), FdPassError> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        stream.readable().await?;
        let mut too_many = false;
        let result = stream.try_io(Interest::READABLE, || {
            let mut space =
                [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = rustix::net::recvmsg(
                stream,
                &mut [io::IoSliceMut::new(&mut chunk)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            // Descriptors beyond the buffer were closed by the kernel.
            too_many |= got.flags.contains(ReturnFlags::CTRUNC);
            Ok(got.bytes)
        });
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if too_many || fds.len() > MAX_FDS {
            return Err(FdPassError::TooMany { max: MAX_FDS });
        }
        let data = &chunk[..n];
        if n == 0 {
            return Ok((line, fds));
        }
        if let Some(end) = data.iter().position(|&b| b == b'\n') {
            if end + 1 != n {
                return Err(FdPassError::Pipelined);
            }
            line.extend_from_slice(data);
            return Ok((line, fds));
        }
        line.extend_from_slice(data);
        if line.len() > max {
            return Err(FdPassError::TooLong(max));
        }
    }
}

/// Makes a descriptor of this process (standard input or output) into one to hand to the
/// daemon: pipes and terminals are reopened (`/proc/self/fd/N`: a new file description,
/// non-blocking, the daemon's alone); sockets and regular files are handed as they are.
/// An error: this one cannot be handed over safely (the caller copies instead).
pub fn reopen_for_daemon(fd: BorrowedFd<'_>, write: bool) -> io::Result<OwnedFd> {
    let stat = rustix::fs::fstat(fd)?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::CharacterDevice => {
            let access = if write {
                OFlags::WRONLY
            } else {
                OFlags::RDONLY
            };
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            Ok(rustix::fs::open(
                path.as_str(),
                access | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
                rustix::fs::Mode::empty(),
            )?)
        }
        FileType::Socket | FileType::RegularFile => Ok(fd.try_clone_to_owned()?),
        other => Err(io::Error::other(format!(
            "cannot hand a {other:?} to the daemon"
        ))),
    }
}

/// A local socket handed to the daemon (`connect`): TCP or Unix, already non-blocking.
pub enum LocalSocket {
    /// A TCP connection.
    Tcp(tokio::net::TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
}

impl LocalSocket {
    /// Takes `fd`, which must be a connected, non-blocking stream socket (TCP or Unix).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, FdPassError> {
        let what = "the connection handed over";
        let wrap = |e: io::Error| unusable(what, e.to_string());
        Ok(match stream_socket(&fd, what, false)? {
            Domain::Tcp => Self::Tcp(
                tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).map_err(wrap)?,
            ),
            Domain::Unix => Self::Unix(
                UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)).map_err(wrap)?,
            ),
        })
    }
}

/// The address family of a handed-over socket.
enum Domain {
    Tcp,
    Unix,
}

fn unusable(what: &'static str, reason: String) -> FdPassError {
    FdPassError::Unusable { what, reason }
}

/// Checks that `fd` is a non-blocking stream socket (listening when `listening`), TCP or
/// Unix, and says which.
fn stream_socket(fd: &OwnedFd, what: &'static str, listening: bool) -> Result<Domain, FdPassError> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let kind =
        sockopt::socket_type(fd).map_err(|e| unusable(what, format!("not a socket ({e})")))?;
    if kind != SocketType::STREAM {
        return Err(unusable(what, "not a stream socket".into()));
    }
    if listening && !sockopt::socket_acceptconn(fd).map_err(|e| unusable(what, e.to_string()))? {
        return Err(unusable(what, "not listening".into()));
    }
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| unusable(what, e.to_string()))?;
    if !flags.contains(OFlags::NONBLOCK) {
        return Err(unusable(what, "not non-blocking".into()));
    }
    let domain = sockopt::socket_domain(fd).map_err(|e| unusable(what, e.to_string()))?;
    if domain == AddressFamily::INET || domain == AddressFamily::INET6 {
        Ok(Domain::Tcp)
    } else if domain == AddressFamily::UNIX {
        Ok(Domain::Unix)
    } else {
        Err(unusable(what, "neither TCP nor a Unix socket".into()))
    }
}

/// A listening socket handed over by `connect --listen` (TCP or Unix).
pub enum LocalListener {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A Unix stream listener.
    Unix(tokio::net::UnixListener),
}

impl LocalListener {
    /// Takes `fd`, which must be a listening, non-blocking stream socket (TCP or Unix).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, FdPassError> {
        let what = "the listening socket handed over";
        let wrap = |e: io::Error| unusable(what, e.to_string());
        Ok(match stream_socket(&fd, what, true)? {
            Domain::Tcp => Self::Tcp(
                tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd)).map_err(wrap)?,
            ),
            Domain::Unix => Self::Unix(
                tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
                    .map_err(wrap)?,
            ),
        })
    }

    /// The next connection, and who made it (for messages).
    pub async fn accept(&self) -> io::Result<(LocalSocket, String)> {
        match self {
            Self::Tcp(l) => {
                let (s, from) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((LocalSocket::Tcp(s), from.to_string()))
            }
            Self::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((LocalSocket::Unix(s), "local socket".into()))
            }
        }
    }
}

impl AsyncRead for LocalSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LocalSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Self::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A socket among a caller's standard streams: its file description may be shared with other
/// processes, so it stays as it is (blocking or not) and every call is `MSG_DONTWAIT`.
enum SharedSocket {
    Unix(UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl SharedSocket {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        use rustix::net::{AddressFamily, SocketType};
        // A datagram or packet socket would cut messages larger than a read to the read's
        // size, and has no end of stream: only byte streams are carried.
        if rustix::net::sockopt::socket_type(&fd)? != SocketType::STREAM {
            return Err(io::Error::other(
                "a datagram or packet socket, not a byte stream (use a stream socket or a pipe)",
            ));
        }
        let domain = rustix::net::sockopt::socket_domain(&fd)?;
        if domain == AddressFamily::UNIX {
            UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)).map(Self::Unix)
        } else if domain == AddressFamily::INET || domain == AddressFamily::INET6 {
            tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).map(Self::Tcp)
        } else {
            Err(io::Error::other("a socket neither TCP nor Unix"))
        }
    }

    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        match (self, interest.is_readable()) {
            (Self::Unix(s), true) => s.poll_read_ready(cx),
            (Self::Unix(s), false) => s.poll_write_ready(cx),
            (Self::Tcp(s), true) => s.poll_read_ready(cx),
            (Self::Tcp(s), false) => s.poll_write_ready(cx),
        }
    }

    /// One non-blocking read into `buf` (`WouldBlock` when nothing is there).
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Interest::READABLE, |fd| {
            rustix::net::recv(fd, &mut *buf, RecvFlags::DONTWAIT).map(|(n, _)| n)
        })
    }

    /// One non-blocking call (`op` gets the descriptor); `WouldBlock` clears the readiness.
    fn try_io<R>(
        &self,
        interest: Interest,
        op: impl FnOnce(BorrowedFd<'_>) -> rustix::io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Self::Unix(s) => s.try_io(interest, || op(s.as_fd()).map_err(io::Error::from)),
            Self::Tcp(s) => s.try_io(interest, || op(s.as_fd()).map_err(io::Error::from)),
        }
    }
}

/// The caller's standard input, as the daemon reads it.
enum Input {
    /// A pipe or terminal reopened by the client: non-blocking and the daemon's alone.
    Pipe(tokio::net::unix::pipe::Receiver),
    /// A socket (see [`SharedSocket`]).
    Socket(SharedSocket),
    /// A regular file or a device that cannot be polled: blocking calls, off the runtime.
    File(tokio::fs::File),
}

/// The caller's standard output, as the daemon writes it.
enum Output {
    /// A pipe or terminal reopened by the client: non-blocking and the daemon's alone.
    Pipe(tokio::net::unix::pipe::Sender),
    /// A socket (see [`SharedSocket`]).
    Socket(SharedSocket),
    /// A regular file or a device that cannot be polled: blocking calls, off the runtime.
    File(tokio::fs::File),
    /// Done (the daemon's copy closed).
    Closed,
}

/// How the daemon serves one of the caller's standard streams (`what`: which, for errors),
/// without changing its flags.
enum Kind {
    Pipe(OwnedFd),
    Socket(SharedSocket),
    File(tokio::fs::File),
}

fn kind_of(fd: OwnedFd, what: &'static str) -> Result<Kind, FdPassError> {
    let unusable = |reason: String| FdPassError::Unusable { what, reason };
    let stat = rustix::fs::fstat(&fd).map_err(|e| unusable(e.to_string()))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(Kind::File(tokio::fs::File::from_std(fd.into()))),
        FileType::Socket => SharedSocket::new(fd)
            .map(Kind::Socket)
            .map_err(|e| unusable(e.to_string())),
        _ => {
            let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| unusable(e.to_string()))?;
            if !flags.contains(OFlags::NONBLOCK) {
                return Err(unusable(
                    "a pipe or terminal must be handed over reopened, non-blocking".into(),
                ));
            }
            Ok(Kind::Pipe(fd))
        }
    }
}

/// Whether registering with the runtime failed because the descriptor cannot be polled
/// (epoll refuses it: a device such as /dev/null, which never blocks).
fn not_pollable(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error())
}

impl Input {
    fn new(fd: OwnedFd) -> Result<Self, FdPassError> {
        let what = "standard input";
        match kind_of(fd, what)? {
            Kind::File(f) => Ok(Self::File(f)),
            Kind::Socket(s) => Ok(Self::Socket(s)),
            Kind::Pipe(fd) => {
                let spare = fd.try_clone()?;
                match tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd) {
                    Ok(r) => Ok(Self::Pipe(r)),
                    Err(e) if not_pollable(&e) => {
                        Ok(Self::File(tokio::fs::File::from_std(spare.into())))
                    }
                    Err(e) => Err(FdPassError::Unusable {
                        what,
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }
}

impl Output {
    fn new(fd: OwnedFd) -> Result<Self, FdPassError> {
        let what = "standard output";
        match kind_of(fd, what)? {
            Kind::File(f) => Ok(Self::File(f)),
            Kind::Socket(s) => Ok(Self::Socket(s)),
            Kind::Pipe(fd) => {
                let spare = fd.try_clone()?;
                match tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(fd) {
                    Ok(w) => Ok(Self::Pipe(w)),
                    Err(e) if not_pollable(&e) => {
                        Ok(Self::File(tokio::fs::File::from_std(spare.into())))
                    }
                    Err(e) => Err(FdPassError::Unusable {
                        what,
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }
}

/// A caller's standard input and output handed to the daemon (`pipe`), as one stream.
pub struct LocalStdio {
    input: Input,
    output: Output,
}

impl LocalStdio {
    /// Takes the caller's standard input and output (see [`reopen_for_daemon`]).
    pub fn new(input: OwnedFd, output: OwnedFd) -> Result<Self, FdPassError> {
        Ok(Self {
            input: Input::new(input)?,
            output: Output::new(output)?,
        })
    }
}

impl AsyncRead for LocalStdio {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let socket = match &mut self.get_mut().input {
            Input::File(f) => return Pin::new(f).poll_read(cx, buf),
            Input::Pipe(r) => return Pin::new(r).poll_read(cx, buf),
            Input::Socket(s) => s,
        };
        loop {
            ready!(socket.poll_ready(cx, Interest::READABLE))?;
            match socket.try_recv(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for LocalStdio {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = match &mut self.get_mut().output {
            Output::File(f) => return Pin::new(f).poll_write(cx, data),
            Output::Pipe(w) => return Pin::new(w).poll_write(cx, data),
            Output::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Output::Socket(s) => s,
        };
        loop {
            ready!(socket.poll_ready(cx, Interest::WRITABLE))?;
            let written = socket.try_io(Interest::WRITABLE, |fd| {
                rustix::net::send(fd, data, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)
            });
            match written {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().output {
            Output::File(f) => Pin::new(f).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Closes the daemon's copy of the output (never `shutdown(2)`: the description may be
    /// shared; the reader sees the end once the `pipe` process exits too, as before).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Output::File(f) = &mut this.output {
            ready!(Pin::new(f).poll_flush(cx))?;
        }
        this.output = Output::Closed;
        Poll::Ready(Ok(()))
    }
}
