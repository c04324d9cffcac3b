//! What `kubeadm init` sets up so that nodes can join with a bootstrap token (its phases
//! `bootstrap-token` and `upload-config`), as API objects to `kubectl apply`:
//!
//! - the token Secret `kube-system/bootstrap-token-<id>` (authentication and signing usages, extra
//!   group `system:bootstrappers:kubeadm:default-node-token`);
//! - `kube-public/cluster-info`: a kubeconfig with the server and CA, which the controller-manager's
//!   bootstrapsigner signs with every signing token (`jws-kubeconfig-<id>`), readable anonymously;
//! - RBAC: bootstrappers may create CSRs (`system:node-bootstrapper`) that are auto-approved
//!   (`…:nodeclient`), nodes' renewals are auto-approved (`…:selfnodeclient`), bootstrappers may get
//!   Nodes (kubeadm's pre-join check), and the apiserver's kubelet-client identity may use the kubelet
//!   API (`system:kubelet-api-admin`).
//!
//! Kubeconfigs are written here too: JSON (which is YAML), certificates embedded.

use serde_json::{Value, json};

/// The extra group kubeadm's default node token authenticates with.
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// The apiserver's client identity towards kubelets.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

fn b64(data: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A bootstrap token, `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl BootstrapToken {
    /// A random token from the kernel's CSPRNG.
    pub fn generate() -> crate::Result<Self> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut bytes = [0u8; 22];
        let mut f = std::fs::File::open("/dev/urandom").map_err(crate::HarnessError::io(
            "opening /dev/urandom for a bootstrap token",
        ))?;
        std::io::Read::read_exact(&mut f, &mut bytes).map_err(crate::HarnessError::io(
            "reading /dev/urandom for a bootstrap token",
        ))?;
        // 256 % 36 != 0: the slight bias does not matter for a test token.
        let s: String = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        Ok(BootstrapToken {
            id: s[..6].to_string(),
            secret: s[6..].to_string(),
        })
    }

    /// `<id>.<secret>`, the bearer token.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// A kubeconfig (JSON) for `server` trusting `ca_pem`, with `user` authenticated by `auth`
/// (e.g. `{"token": …}` or `{"client-certificate-data": …, "client-key-data": …}`).
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, auth: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "default", "context": {"cluster": "kubernetes", "user": user}}],
        "current-context": "default",
    })
}

/// A kubeconfig (JSON) for a client certificate.
pub fn cert_kubeconfig(server: &str, ca_pem: &str, user: &str, cert_pem: &str, key_pem: &str) -> Value {
    kubeconfig(
        server,
        ca_pem,
        user,
        json!({"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}),
    )
}

/// `kube-public/cluster-info`'s kubeconfig: server and CA only, cluster name "" as kubeadm writes it.
fn cluster_info_kubeconfig(server: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [],
        "contexts": [],
        "current-context": "",
        "preferences": {},
    })
}

fn cluster_role_binding(name: &str, role: &str, kind: &str, subject: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    })
}

/// Everything `kubeadm init` creates for joining nodes, as one `v1/List` for `kubectl apply -f`.
pub fn join_objects(token: &BootstrapToken, server: &str, ca_pem: &str) -> Value {
    let cluster_info = cluster_info_kubeconfig(server, ca_pem).to_string();
    let items = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": format!("bootstrap-token-{}", token.id), "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "description": "knode test harness: the default node join token",
                "token-id": token.id,
                "token-secret": token.secret,
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
                "auth-extra-groups": NODE_TOKEN_GROUP,
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": {"kubeconfig": cluster_info},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"],
                       "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "kubeadm:bootstrap-signer-clusterinfo"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:bootstrappers"},
            ],
        }),
        cluster_role_binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            "Group",
            NODE_TOKEN_GROUP,
        ),
        cluster_role_binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "Group",
            NODE_TOKEN_GROUP,
        ),
        cluster_role_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "Group",
            "system:nodes",
        ),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kubeadm:get-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        }),
        cluster_role_binding(
            "kubeadm:get-nodes",
            "kubeadm:get-nodes",
            "Group",
            NODE_TOKEN_GROUP,
        ),
        cluster_role_binding(
            "knode:kube-apiserver-kubelet-client",
            "system:kubelet-api-admin",
            "User",
            KUBELET_CLIENT_USER,
        ),
    ];
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// A CertificateSigningRequest object for `csr_pem` (PEM `CERTIFICATE REQUEST`).
pub fn csr_object(name: &str, csr_pem: &str, signer: &str, usages: &[&str]) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": b64(csr_pem), "signerName": signer, "usages": usages},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_kubeadms_shape() {
        let t = BootstrapToken::generate().unwrap();
        assert_eq!(t.id.len(), 6);
        assert_eq!(t.secret.len(), 16);
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        assert!(ok(&t.id) && ok(&t.secret), "{t:?}");
        assert_ne!(t, BootstrapToken::generate().unwrap());
    }

    #[test]
    fn join_objects_name_the_token_and_carry_the_ca() {
        let t = BootstrapToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
        };
        let list = join_objects(&t, "https://10.0.0.1:6443", "PEM");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items[0]["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(items[0]["stringData"]["auth-extra-groups"], NODE_TOKEN_GROUP);
        let kc: Value = serde_json::from_str(items[1]["data"]["kubeconfig"].as_str().unwrap()).unwrap();
        assert_eq!(kc["clusters"][0]["cluster"]["server"], "https://10.0.0.1:6443");
        assert_eq!(
            kc["clusters"][0]["cluster"]["certificate-authority-data"],
            b64("PEM")
        );
    }
}
