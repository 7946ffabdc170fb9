//! The relay's typed configuration, with safe defaults for every limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nullport_protocol::Identity;

use crate::admission::Admission;

/// Everything the relay needs to run.
#[derive(Debug)]
pub struct RelayConfig {
    /// The relay's identity (its NodeId is what nodes pin).
    pub identity: Arc<Identity>,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Who may connect.
    pub admission: Arc<Admission>,
    /// Bounds.
    pub limits: RelayLimits,
    /// Where to keep state that must survive a restart (witnessed audit checkpoints); none:
    /// memory only.
    pub state_dir: Option<std::path::PathBuf>,
    /// Where that state lives: the state directory's files (default), or an etcd cluster
    /// shared with the other relays of a fleet (then the state directory holds only the
    /// network admin's list file).
    pub store: crate::store::StoreSpec,
    /// Test-only hooks (feature `testing`).
    #[cfg(feature = "testing")]
    pub testing: crate::testing::TestHooks,
}

impl RelayConfig {
    /// A config with default limits.
    pub fn new(identity: Arc<Identity>, listen: SocketAddr, admission: Arc<Admission>) -> Self {
        Self {
            identity,
            listen,
            admission,
            limits: RelayLimits::default(),
            state_dir: None,
            store: crate::store::StoreSpec::default(),
            #[cfg(feature = "testing")]
            testing: crate::testing::TestHooks::default(),
        }
    }
}

/// Every bound the relay enforces. Exceeding one is a typed error to that node only.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Admitted connections at once.
    pub max_connections: usize,
    /// Connections still in their QUIC/TLS handshake or admission, at once.
    pub max_pending: usize,
    /// The same, from one source IP address.
    pub max_pending_per_ip: usize,
    /// Time from the first packet to a completed `Hello`; slower connections are closed.
    pub admission_deadline: Duration,
    /// Streams one node may have open to the relay at once (its dials).
    pub max_streams_per_node: u32,
    /// Dials a node may start per second (token bucket by identity; 0 = unlimited).
    pub dials_per_second: u64,
    /// Burst of dials above the rate.
    pub dial_burst: u64,
    /// Bytes a node may send through the relay per second (0 = unlimited); over it, its
    /// streams are slowed down (QUIC flow control pushes back to the sender).
    pub bytes_per_second: u64,
    /// Burst of bytes above the rate.
    pub byte_burst: u64,
    /// A connection silent this long is closed (nodes send keep-alives more often).
    pub idle_timeout: Duration,
    /// Largest relay-link message accepted.
    pub max_link_message: usize,
    /// Time a dial may take to send its `Dial` message.
    pub request_deadline: Duration,
    /// QUIC: bytes a peer may send on one stream before we read them.
    pub stream_receive_window: u32,
    /// QUIC: bytes a peer may send on all streams before we read them.
    pub connection_receive_window: u32,
    /// QUIC: bytes we buffer for sending to one peer.
    pub send_window: u64,
    /// UDP socket receive and send buffer requested from the kernel (capped by
    /// `net.core.rmem_max` / `wmem_max`). The default 208 KiB overflows when hundreds of
    /// nodes connect at once, and every dropped handshake packet costs a ~1 s retransmit.
    pub socket_buffer: usize,
    /// Revocation lists held for distribution (one per signer, and a node may publish only
    /// its own); a new signer over this is refused with `ListsFull`.
    pub max_revocation_lists: usize,
    /// Bytes of revocation lists held in total; a list that would pass it is refused with
    /// `ListsFull`.
    pub max_revocation_bytes: usize,
    /// Revocation lists one node may publish per second (burst: ten times that).
    pub publishes_per_second: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_pending: 4_096,
            max_pending_per_ip: 64,
            admission_deadline: Duration::from_secs(10),
            max_streams_per_node: 256,
            dials_per_second: 50,
            dial_burst: 100,
            bytes_per_second: 0,
            byte_burst: 16 << 20,
            idle_timeout: Duration::from_secs(30),
            max_link_message: nullport_protocol::relay_link::MAX_LINK_MESSAGE,
            request_deadline: Duration::from_secs(10),
            stream_receive_window: 4 << 20,
            connection_receive_window: 16 << 20,
            send_window: 16 << 20,
            socket_buffer: 8 << 20,
            max_revocation_lists: 10_000,
            max_revocation_bytes: 256 << 20,
            publishes_per_second: 1,
        }
    }
}

/// Streams a node may open right after admission (its control stream and a few dials); the
/// relay raises the limit, doubling up to [`RelayLimits::max_streams_per_node`], as the node
/// uses them. quinn keeps state for every stream a peer may open (about 80 B each), so an
/// idle node granted 256 streams would cost 20 KiB of relay memory for nothing.
pub const INITIAL_STREAMS: u32 = 8;

impl RelayLimits {
    /// The stream limit a node starts with.
    pub fn initial_streams(&self) -> u32 {
        INITIAL_STREAMS.min(self.max_streams_per_node)
    }

    /// quinn's transport parameters for these limits (quinn's defaults are not used: its
    /// connection receive window is unbounded).
    pub fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(self.initial_streams().into())
            .max_concurrent_uni_streams(0u32.into())
            .stream_receive_window(self.stream_receive_window.into())
            .receive_window(self.connection_receive_window.into())
            .send_window(self.send_window)
            .datagram_receive_buffer_size(None)
            .max_idle_timeout(
                quinn::IdleTimeout::try_from(self.idle_timeout)
                    .ok()
                    .or(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
                        30_000,
                    )))),
            );
        t
    }
}
