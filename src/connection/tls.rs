//! `wss://` through rustls: webpki roots by default, extra root
//! certificates, exact certificates trusted as they are (pinned: what a
//! self-signed `openssl req -x509` certificate needs, since webpki refuses a
//! CA certificate shown as the server's own), a caller-built `ClientConfig`,
//! or no verification at all (the counterpart of Python's
//! `ssl_verify=False`, for self-signed tunnels). A failed handshake says
//! what to do about it ([`explain`]).

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
        if opts.pinned.is_empty() {
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    pinned: opts.pinned.clone(),
                    webpki,
                }))
                .with_no_client_auth()
        }
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

/// A rustls handshake error with what to do about it, when there is
/// something to say: the error itself stays the source.
pub(crate) fn explain(e: std::io::Error) -> std::io::Error {
    use rustls::{CertificateError, InvalidMessage};
    let hint = match e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType)) => {
            "the server did not answer in TLS: is it a plain ws:// server? (use ws://)"
        }
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the server's certificate is not signed by a trusted root: trust its CA with \
             add_root_certificate(s_pem), trust a self-signed certificate itself with \
             trust_certificate(s_pem), or skip verification with tls_verify(false) / \
             VUER_SSL_VERIFY=0 (encrypted, not authenticated)"
        }
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(o)))
            if o.to_string().contains("CaUsedAsEndEntity") =>
        {
            "the server shows a CA certificate as its own (a self-signed certificate made with \
             `openssl req -x509` is one): trust exactly that certificate with \
             trust_certificate(s_pem) instead of add_root_certificate"
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "the certificate does not name this host: connect by a name it lists",
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "the certificate has expired (or this machine's clock is wrong)",
        _ => return e,
    };
    std::io::Error::new(e.kind(), Explained { inner: e, hint })
}

#[derive(Debug)]
struct Explained {
    inner: std::io::Error,
    hint: &'static str,
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} — {}", self.inner, self.hint)
    }
}

impl std::error::Error for Explained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner)
    }
}

/// Trusts the pinned certificates exactly as they are (whatever their
/// issuer, CA flag or names: the bytes are the identity), and any other
/// through the usual webpki verification. Handshake signatures are always
/// checked, so the server must hold the key of the certificate it shows.
#[derive(Debug)]
struct Pinned {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    // Handshake signatures: webpki's own checks, with the same provider's
    // algorithms.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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
    /// Certificates trusted exactly as they are (pinned).
    pub pinned: Vec<CertificateDer<'static>>,
    /// A whole rustls configuration, used as given.
    pub custom: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("verify", &self.verify)
            .field("extra_roots", &self.extra_roots.len())
            .field("pinned", &self.pinned.len())
            .field("custom", &self.custom.is_some())
            .finish()
    }
}
