//! TLS 1.3 for the relay link, node side: present our Ed25519 key, accept only the relay key
//! pinned in the relay address (RFC 7250 raw public keys; no CA, no web PKI).

use std::sync::{Arc, Mutex};

use nullport_protocol::{Identity, NodeId, relay_link};
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, SetupError};

/// What the relay presented on the last attempt, to explain a pin mismatch.
pub type PresentedKey = Arc<Mutex<Option<String>>>;

/// quinn client crypto for `identity`, accepting only the relay key `relay`; the key the
/// relay actually presented is recorded in `presented`.
pub fn client_crypto(
    identity: &Identity,
    relay: NodeId,
    presented: PresentedKey,
) -> Result<quinn::crypto::rustls::QuicClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pkcs8 = identity.to_pkcs8_der();
    let key =
        rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_slice()))
            .map_err(|e| Error::Setup(SetupError::Tls(e)))?;
    let certified = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(identity.node_id().to_spki_der())],
        key,
    );
    let verifier = Arc::new(PinnedRelay {
        relay,
        presented,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Setup(SetupError::Tls(e)))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(Arc::new(
            certified,
        ))));
    config.alpn_protocols = vec![relay_link::ALPN.to_vec()];
    config.enable_early_data = false;
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| Error::Setup(SetupError::QuicTls(e)))
}

/// Accepts exactly one raw public key: the relay's.
#[derive(Debug)]
struct PinnedRelay {
    relay: NodeId,
    presented: PresentedKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedRelay {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = NodeId::from_spki_der(end_entity.as_ref());
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(match &presented {
                Ok(id) => id.to_string(),
                Err(e) => format!("an invalid key ({e})"),
            });
        }
        if intermediates.is_empty() && presented.as_ref().ok() == Some(&self.relay) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
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
