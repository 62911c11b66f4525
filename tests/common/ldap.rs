//! A real OpenLDAP server (Debian's `slapd`) on free loopback ports, from a
//! generated configuration, with the memberof and ppolicy overlays, a
//! certificate from a test CA (LDAPS and StartTLS), and a small directory:
//! users, groups, a locked account and one whose password must be changed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, Mod};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::process::{Child, Command};

use super::free_port;

pub const SUFFIX: &str = "dc=example,dc=com";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
const ROOT_PASSWORD: &str = "root secret";
pub const SERVICE_DN: &str = "cn=stepgate,dc=example,dc=com";
pub const SERVICE_PASSWORD: &str = "service secret 9d2e";
pub const DIRECTORY_PASSWORD: &str = "directory password 4b1c";
pub const ALICE_MOBILE: &str = "+41 79 555 01 23";

pub struct Slapd {
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Slapd {
    /// A running server holding the test directory.
    pub async fn start() -> Self {
        assert!(Path::new("/usr/sbin/slapd").exists(), "the LDAP tests need Debian's slapd: run scripts/setup");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        write_certificates(dir.path());
        std::fs::write(dir.path().join("slapd.conf"), config(dir.path())).unwrap();
        let mut slapd = Self { addr: free_port(), tls_addr: free_port(), dir, child: None };
        slapd.run().await;
        slapd.fill().await;
        slapd
    }

    /// Starts the server process (again, after [`Slapd::stop`]) and waits
    /// until it answers.
    pub async fn run(&mut self) {
        let urls = format!("ldap://{}/ ldaps://{}/", self.addr, self.tls_addr);
        let child = Command::new("/usr/sbin/slapd")
            .args(["-d", "0", "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-h", &urls])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
        for _ in 0..400 {
            if let Ok((conn, mut ldap)) = LdapConnAsync::new(&self.url()).await {
                ldap3::drive!(conn);
                if ldap.simple_bind(ROOT_DN, ROOT_PASSWORD).await.is_ok_and(|r| r.rc == 0) {
                    let _ = ldap.unbind().await;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("slapd did not start");
    }

    /// Stops the server; its data stays for [`Slapd::run`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The `[directory]` sections for this server; `extra` goes into
    /// `[directory.ldap]`.
    pub fn config(&self, url: &str, extra: &str) -> String {
        format!(
            "[directory]\nkind = \"ldap\"\n[directory.ldap]\nurl = \"{url}\"\nbind_dn = \"{SERVICE_DN}\"\n\
             bind_password_env = \"STEPGATE_TEST_LDAP_PASSWORD\"\nbase_dn = \"ou=people,{SUFFIX}\"\nca_file = \"{}\"\n{extra}\n",
            self.ca_file().display()
        )
    }

    /// A connection bound as the directory's administrator.
    pub async fn admin(&self) -> Ldap {
        let (conn, mut ldap) = LdapConnAsync::new(&self.url()).await.expect("slapd answers");
        ldap3::drive!(conn);
        ldap.simple_bind(ROOT_DN, ROOT_PASSWORD).await.unwrap().success().unwrap();
        ldap
    }

    /// Changes one attribute of an entry, as an administrator would.
    pub async fn modify(&self, dn: &str, change: Mod<&str>) {
        let mut ldap = self.admin().await;
        ldap.modify(dn, vec![change]).await.unwrap().success().unwrap_or_else(|e| panic!("modify {dn}: {e}"));
        let _ = ldap.unbind().await;
    }

    async fn fill(&self) {
        let mut ldap = self.admin().await;
        let entries: Vec<(String, Attributes)> = vec![
            (SUFFIX.into(), vec![("objectClass", vec!["dcObject", "organization"]), ("dc", vec!["example"]), ("o", vec!["Example"])]),
            (
                SERVICE_DN.into(),
                vec![
                    ("objectClass", vec!["organizationalRole", "simpleSecurityObject"]),
                    ("cn", vec!["stepgate"]),
                    ("userPassword", vec![SERVICE_PASSWORD]),
                ],
            ),
            (format!("ou=people,{SUFFIX}"), vec![("objectClass", vec!["organizationalUnit"]), ("ou", vec!["people"])]),
            (format!("ou=groups,{SUFFIX}"), vec![("objectClass", vec!["organizationalUnit"]), ("ou", vec!["groups"])]),
            (format!("ou=policies,{SUFFIX}"), vec![("objectClass", vec!["organizationalUnit"]), ("ou", vec!["policies"])]),
            (
                format!("cn=default,ou=policies,{SUFFIX}"),
                vec![
                    ("objectClass", vec!["device", "pwdPolicy"]),
                    ("cn", vec!["default"]),
                    ("pwdAttribute", vec!["userPassword"]),
                    ("pwdMustChange", vec!["TRUE"]),
                    ("pwdLockout", vec!["TRUE"]),
                    ("pwdMaxFailure", vec!["0"]),
                ],
            ),
        ];
        for (dn, attributes) in entries {
            add(&mut ldap, &dn, attributes).await;
        }
        for (uid, name) in [("alice", "Alice Liddell"), ("bob", "Bob"), ("carol", "Carol"), ("dave", "Dave")] {
            let mail = format!("{uid}@example.com");
            let attributes = vec![
                ("objectClass", vec!["inetOrgPerson"]),
                ("uid", vec![uid]),
                ("cn", vec![name]),
                ("sn", vec![name]),
                ("mail", vec![mail.as_str()]),
                ("userPassword", vec![DIRECTORY_PASSWORD]),
            ];
            let mut attributes = attributes;
            if uid == "alice" {
                attributes.push(("mobile", vec![ALICE_MOBILE]));
            }
            add(&mut ldap, &user_dn(uid), attributes).await;
        }
        // Groups after their members, so the memberof overlay fills memberOf.
        for (group, members) in [("staff", vec!["alice", "bob"]), ("admins", vec!["alice"])] {
            let members: Vec<String> = members.iter().map(|uid| user_dn(uid)).collect();
            let attributes =
                vec![("objectClass", vec!["groupOfNames"]), ("cn", vec![group]), ("member", members.iter().map(String::as_str).collect())];
            add(&mut ldap, &group_dn(group), attributes).await;
        }
        let _ = ldap.unbind().await;
        // Carol is locked for good; Dave must change his password first.
        self.modify(&user_dn("carol"), Mod::Replace("pwdAccountLockedTime", HashSet::from(["000001010000Z"]))).await;
        self.modify(&user_dn("dave"), Mod::Replace("pwdReset", HashSet::from(["TRUE"]))).await;
    }
}

pub fn user_dn(uid: &str) -> String {
    format!("uid={uid},ou=people,{SUFFIX}")
}

pub fn group_dn(group: &str) -> String {
    format!("cn={group},ou=groups,{SUFFIX}")
}

/// An entry's attributes and their values.
type Attributes<'a> = Vec<(&'a str, Vec<&'a str>)>;

async fn add(ldap: &mut Ldap, dn: &str, attributes: Attributes<'_>) {
    let attributes: Vec<(&str, HashSet<&str>)> =
        attributes.into_iter().map(|(name, values)| (name, values.into_iter().collect())).collect();
    ldap.add(dn, attributes).await.unwrap().success().unwrap_or_else(|e| panic!("add {dn}: {e}"));
}

fn write_certificates(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let server = CertificateParams::new(names).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
}

fn config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload ppolicy
pidfile {dir}/slapd.pid
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server-key.pem

database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw "{ROOT_PASSWORD}"
directory {dir}/db
access to attrs=userPassword by anonymous auth by self write by * none
access to * by * read

overlay memberof
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{SUFFIX}"
ppolicy_use_lockout
"#
    )
}
