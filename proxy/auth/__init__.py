"""Swift tempauth for the proxy: users from the deployment file, signed tokens, ACLs.

Sans-IO. The proxy calls, per request (docs/auth.md has the full sequence):
`is_auth_path` -> `TempAuth.handle_auth_get`, or `TempAuth.authenticate` ->
(fetch container info) -> `TempAuth.authorize` -> (if `needs_account_acl`: fetch the account
ACL and authorize again) -> `backend_request_headers` / `client_response_headers`.
"""

from common.authtoken import TOKEN_VERSION, derive_secret
from proxy.auth._acl import (
    ACL_BYTES_MAX,
    AccountAcl,
    AclError,
    ContainerAcl,
    account_acl_from_sysmeta,
    clean_account_acl,
    clean_container_acl,
    format_account_acl,
    parse_account_acl,
    parse_container_acl,
    referrer_allowed,
)
from proxy.auth._headers import (
    ACCOUNT_ACL_HEADER,
    ACCOUNT_ACL_SYSMETA,
    OWNER_ONLY_HEADERS,
    MissingAccount,
    backend_request_headers,
    client_response_headers,
    missing_account_action,
)
from proxy.auth._model import (
    AuthResponse,
    Decision,
    Identity,
    InvalidToken,
    PathParts,
    Verdict,
)
from proxy.auth._tempauth import S3Credentials, TempAuth, is_auth_path

__all__ = [
    "ACCOUNT_ACL_HEADER",
    "ACCOUNT_ACL_SYSMETA",
    "ACL_BYTES_MAX",
    "OWNER_ONLY_HEADERS",
    "TOKEN_VERSION",
    "AccountAcl",
    "AclError",
    "AuthResponse",
    "ContainerAcl",
    "Decision",
    "Identity",
    "InvalidToken",
    "MissingAccount",
    "PathParts",
    "S3Credentials",
    "TempAuth",
    "Verdict",
    "account_acl_from_sysmeta",
    "backend_request_headers",
    "clean_account_acl",
    "clean_container_acl",
    "client_response_headers",
    "derive_secret",
    "format_account_acl",
    "is_auth_path",
    "missing_account_action",
    "parse_account_acl",
    "parse_container_acl",
    "referrer_allowed",
]
