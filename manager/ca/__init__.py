"""Cluster certificate authority: root CA, join tokens, node certificates, mutual-TLS contexts.

Modules: `root` (root CA, digest, rotation trust set), `tokens` (join tokens), `certs` (node
keys, CSRs, signing, identity, renewal), `storage` (files under the state dir), `tls` (SSL
contexts, peer identity, CA pinning for joins). Everything but `storage` and `tls` is pure.

Join protocol (what `shoal swarm join --token T ADDR` does with these pieces)
----------------------------------------------------------------------------
Python 3.11's `ssl` exposes only the peer's leaf certificate, not the chain it sent, so the
joining node cannot read the root out of the handshake. It fetches it instead and checks it
against the token, as SwarmKit's GetRemoteCA does:

1. `parse_token(T)`; connect to ADDR with `bootstrap_client_context(token.ca_digest)` (no
   verification, no client certificate) and take the server's certificate,
   `ssl_object.getpeercert(binary_form=True)`.
2. On that same connection ask for the root certificate(s) (an unauthenticated request that
   carries nothing secret), then call `verify_presented_chain(server_der, token.ca_digest,
   roots)`. It returns the pinned root only if its sha256 equals the token's digest, it signed
   the server's certificate, and that certificate is a valid manager certificate. Since the
   handshake proved the server holds the key of the certificate it showed, a man in the middle
   fails here, before the token or the CSR was sent.
3. Reconnect with `client_context(None, pinned_root)` (normal verification against the pinned
   root, no client certificate) and send the token and `make_csr(make_node_key())`. The manager
   runs `token_role` to pick the role and `sign_csr` to issue the certificate (subject chosen
   by the CA, never by the CSR); the key never leaves the node.
4. `save_node_credentials(state_dir, key, cert, roots)`; from now on every connection uses
   `server_context` / `client_context` with those credentials, and endpoints authorize with
   `peer_identity` + `check_peer`.

The cluster port serves joining nodes too, so its server context uses
`require_client_cert=False`; routes other than "root CA" and "join" require `peer_identity`.

Identifiers: node and cluster ids are 25 lowercase base36 characters (128 random bits).
The CA digest in a token is the 64-character lowercase hex sha256 of the root's DER.
"""

from .certs import (
    DEFAULT_VALIDITY,
    Identity,
    NodeCredentials,
    issued_by,
    make_csr,
    make_node_key,
    needs_renewal,
    parse_identity,
    sign_csr,
)
from .errors import BootstrapError, CAError, CertificateError, PeerRejected, TokenError
from .ids import is_valid_id, new_node_id
from .root import ClusterCA, RootCA, ca_digest, create_root_ca
from .storage import load_ca, load_node_credentials, save_ca, save_node_credentials
from .tls import (
    BootstrapContext,
    bootstrap_client_context,
    check_peer,
    client_context,
    is_revoked,
    peer_identity,
    server_context,
    verify_presented_chain,
)
from .tokens import JoinTokens, Role, Token, make_token, parse_token, token_role

__all__ = [
    "DEFAULT_VALIDITY",
    "BootstrapContext",
    "BootstrapError",
    "CAError",
    "CertificateError",
    "ClusterCA",
    "Identity",
    "JoinTokens",
    "NodeCredentials",
    "PeerRejected",
    "Role",
    "RootCA",
    "Token",
    "TokenError",
    "bootstrap_client_context",
    "ca_digest",
    "check_peer",
    "client_context",
    "create_root_ca",
    "is_revoked",
    "is_valid_id",
    "issued_by",
    "load_ca",
    "load_node_credentials",
    "make_csr",
    "make_node_key",
    "make_token",
    "needs_renewal",
    "new_node_id",
    "parse_identity",
    "parse_token",
    "peer_identity",
    "save_ca",
    "save_node_credentials",
    "server_context",
    "sign_csr",
    "token_role",
    "verify_presented_chain",
]
