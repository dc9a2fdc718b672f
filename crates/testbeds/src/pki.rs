//! Test certificates for gRPC mutual TLS, made with the `openssl` CLI (present on the
//! host, so in the Soft-RoCE guest too): CAs, and leaf certificates signed by them for
//! both client and server use, as weed uses one certificate both ways. No host names in
//! them: weed's gRPC TLS checks the chain only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A directory of test CAs and certificates.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// An empty PKI in `dir` (created if missing; it must be writable).
    pub fn new(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Makes CA `name` (`NAME-ca.crt`, `NAME-ca.key`, subject `CN=NAME test CA`); its
    /// certificate's path.
    pub fn ca(&self, name: &str) -> Result<PathBuf, String> {
        let (crt, key) = (format!("{name}-ca.crt"), format!("{name}-ca.key"));
        self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key])?;
        let subject = format!("/CN={name} test CA");
        self.openssl(&["req", "-x509", "-new", "-key", &key, "-out", &crt, "-days", "2", "-subj", &subject])?;
        Ok(self.dir.join(crt))
    }

    /// Makes `CN.crt`/`CN.key`, subject `CN=cn`, signed by CA `ca` (made by [`Pki::ca`]),
    /// for server and client authentication.
    pub fn cert(&self, ca: &str, cn: &str) -> Result<CertFiles, String> {
        let (crt, key, csr) = (format!("{cn}.crt"), format!("{cn}.key"), format!("{cn}.csr"));
        self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key])?;
        self.openssl(&["req", "-new", "-key", &key, "-out", &csr, "-subj", &format!("/CN={cn}")])?;
        let ext =
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n";
        std::fs::write(self.dir.join("leaf.ext"), ext).map_err(|e| e.to_string())?;
        let (ca_crt, ca_key) = (format!("{ca}-ca.crt"), format!("{ca}-ca.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ])?;
        Ok(CertFiles { cert: self.dir.join(crt), key: self.dir.join(key) })
    }

    /// The PKI's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn openssl(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("the openssl CLI makes the test certificates: {e}"))?;
        if !out.status.success() {
            return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }
}
