//! Test certificates, made at run time with rcgen so that no private key is ever committed:
//! a CA, leaf certificates it signs (server names, a wildcard, an IP address, a client
//! certificate), and self-signed ones nobody trusts. Written as PEM files into a directory
//! of the test's own, because limpet reads its certificates from files (Docker secrets).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use limpet::tls::certs::CertFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// A certificate authority the tests' clients and limpet can be told to trust.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Where this CA and everything it issued are written.
    pub dir: TempDir,
    /// The CA certificate as PEM, for clients; also written to `ca.pem` in `dir`.
    pub pem: String,
    pub pem_path: PathBuf,
}

/// A leaf certificate and its key, both as files and in memory.
#[derive(Clone)]
pub struct Leaf {
    pub files: CertFiles,
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("limpet test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let pem = cert.pem();
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, &pem).expect("write the CA");
        Self {
            cert,
            key,
            dir,
            pem,
            pem_path,
        }
    }

    /// A server certificate for `names` (DNS names, wildcards or IP addresses), written as
    /// `<file>.crt` and `<file>.key`.
    pub fn server(&self, file: &str, names: &[&str]) -> Leaf {
        self.issue(file, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for mutual TLS.
    pub fn client(&self, file: &str) -> Leaf {
        self.issue(file, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("generate a key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf parameters");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the leaf");
        write_leaf(self.dir.path(), file, &cert, &key)
    }
}

/// A self-signed certificate for `names` that no client trusts, written into `dir`.
pub fn self_signed(dir: &Path, file: &str, names: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("generate a key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .expect("parameters")
        .self_signed(&key)
        .expect("self-sign");
    write_leaf(dir, file, &cert, &key)
}

fn write_leaf(dir: &Path, file: &str, cert: &rcgen::Certificate, key: &KeyPair) -> Leaf {
    let files = CertFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    std::fs::write(&files.cert, &cert_pem).expect("write the certificate");
    std::fs::write(&files.key, &key_pem).expect("write the key");
    Leaf {
        files,
        der: cert.der().clone(),
        cert_pem,
        key_pem,
    }
}

impl Leaf {
    /// Replaces this leaf's files with `other`'s contents, as a secret rotation would:
    /// written aside and renamed over, so a reader never sees half a file.
    pub fn overwrite_with(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(&self.files.cert, cert_pem), (&self.files.key, key_pem)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).expect("write aside");
            std::fs::rename(&aside, path).expect("rename over");
        }
    }

    /// The chain and key as rustls takes them, for backends the tests run themselves.
    pub fn rustls_pair(
        &self,
    ) -> (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .expect("read the key")
            .expect("a key");
        (vec![self.der.clone()], key)
    }
}

/// A directory under the target's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "certs-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create the directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
