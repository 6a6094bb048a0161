//! TLS for the client side (STARTTLS to the AUTH upstream), with `tls_verify` deciding how
//! much of the upstream's certificate is checked: nothing (`no`: the default, as for
//! opportunistic SMTP TLS), the chain (`ca`), or the chain and the host name (`host`).

use crate::model::proxy::TlsVerify;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;

/// The client configuration for `verify`, trusting the CAs in `ca_file` where it checks.
/// One configuration is shared by every upstream connection, so TLS sessions are resumed.
pub fn client_config(verify: TlsVerify, ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(crate::crypto::provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match verify {
        TlsVerify::No => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient::AnyCertificate(provider)))
            .with_no_client_auth(),
        TlsVerify::Ca | TlsVerify::Host => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca_file)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls_ca {}: {e}", ca_file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "tls_ca {}: no usable CA certificate",
                    ca_file.display()
                ));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            if verify == TlsVerify::Host {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Lenient::ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(Arc::new(config))
}

/// The name the upstream is addressed by, for SNI and `tls_verify = host`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|e| format!("`{host}`: {e}"))
}

/// The two checks weaker than webpki's own: `tls_verify = no` (any certificate; signatures are
/// still checked, so the handshake is real) and `tls_verify = ca` (the chain must lead to a
/// trusted CA, but the name may differ: upstreams are often addressed by IP).
#[derive(Debug)]
enum Lenient {
    AnyCertificate(Arc<CryptoProvider>),
    ChainOnly(Arc<WebPkiServerVerifier>),
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self {
            Lenient::AnyCertificate(_) => Ok(ServerCertVerified::assertion()),
            Lenient::ChainOnly(webpki) => {
                match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                    Err(Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    )) => Ok(ServerCertVerified::assertion()),
                    other => other,
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        match self {
            Lenient::AnyCertificate(p) => {
                verify_tls12_signature(message, cert, dss, &p.signature_verification_algorithms)
            }
            Lenient::ChainOnly(w) => w.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        match self {
            Lenient::AnyCertificate(p) => {
                verify_tls13_signature(message, cert, dss, &p.signature_verification_algorithms)
            }
            Lenient::ChainOnly(w) => w.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match self {
            Lenient::AnyCertificate(p) => p.signature_verification_algorithms.supported_schemes(),
            Lenient::ChainOnly(w) => w.supported_verify_schemes(),
        }
    }
}
