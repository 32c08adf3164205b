//! `wss://` through rustls: webpki roots by default, extra root
//! certificates, a caller-built `ClientConfig`, or no verification at all
//! (the counterpart of Python's `ssl_verify=False`, for self-signed tunnels).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Builds the rustls configuration for `opts`.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    if let Some(custom) = &opts.custom {
        return Ok(custom.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if opts.verify {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in &opts.extra_roots {
            roots
                .add(der.clone())
                .map_err(|e| format!("invalid extra root certificate: {e}"))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    };
    // HTTP/1.1 only: the websocket upgrade is an HTTP/1.1 mechanism.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads PEM certificates (for [`ClientBuilder::add_root_certificates_pem`](crate::ClientBuilder::add_root_certificates_pem)).
pub(crate) fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| format!("invalid PEM certificate: {e:?}"))?;
    if certs.is_empty() {
        return Err("no certificate found in PEM data".into());
    }
    Ok(certs)
}

/// Accepts any certificate. Handshake signatures are still checked, so the
/// peer must hold the key of the certificate it shows; only the chain of
/// trust and the name are not.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS settings of a client (set through `ClientBuilder`: `tls_verify`,
/// `add_root_certificate`, `tls_config`).
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    /// Verify the server's certificate (default on).
    pub verify: bool,
    /// Roots trusted besides the webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// A whole rustls configuration, used as given.
    pub custom: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("verify", &self.verify)
            .field("extra_roots", &self.extra_roots.len())
            .field("custom", &self.custom.is_some())
            .finish()
    }
}
