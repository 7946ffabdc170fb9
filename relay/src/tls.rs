//! TLS 1.3 for the relay link: the relay presents its Ed25519 key and requires the node's,
//! both as RFC 7250 raw public keys. No certificates, no CA.
//!
//! Admission happens in the client-key verifier, inside the TLS handshake: a key that is invalid,
//! weak, or (in allowlist mode) unknown is refused with a TLS alert, so such a node never gets
//! a connection, a stream, or a word about who is online.

use std::sync::Arc;

use nullport_protocol::{Identity, NodeId, relay_link};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::admission::Admission;
use crate::error::Error;

/// Builds the quinn server crypto for `identity`, admitting nodes through `admission`.
pub fn server_crypto(
    identity: &Identity,
    admission: Arc<Admission>,
) -> Result<quinn::crypto::rustls::QuicServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pkcs8 = identity.to_pkcs8_der();
    let key =
        rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_slice()))?;
    let certified = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(identity.node_id().to_spki_der())],
        key,
    );
    let verifier = Arc::new(NodeVerifier {
        admission,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(Arc::new(
            certified,
        ))));
    config.alpn_protocols = vec![relay_link::ALPN.to_vec()];
    config.max_early_data_size = 0;
    // No resumption: every connection proves its key afresh (a resumed TLS 1.3 session
    // would carry the old client authentication over), and no tickets are made or stored
    // per connection.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(quinn::crypto::rustls::QuicServerConfig::try_from(config)?)
}

/// The NodeId a connection authenticated with (its raw public key).
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    NodeId::from_spki_der(certs.first()?.as_ref()).ok()
}

/// Verifies a node's raw public key and decides admission.
#[derive(Debug)]
struct NodeVerifier {
    admission: Arc<Admission>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for NodeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ));
        }
        let node_id = NodeId::from_spki_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.admission.may_handshake(&node_id) {
            tracing::info!(peer = %node_id, "refused at TLS handshake: not admitted");
            self.admission.count_refusal();
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}
