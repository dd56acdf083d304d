"""Server-side verification of OSS request signatures (V1 ``OSS`` and V4 ``OSS4-HMAC-SHA256``).

Written from the OSS signing rules, independently of the oss2 client, so that a client bug or a
wrong secret is caught as a 403 exactly as real OSS would answer.
"""

from __future__ import annotations

import base64
import calendar
import email.utils
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote

# Query parameters that V1 signs as "sub-resources" (the other parameters are not signed).
V1_SUBRESOURCES = frozenset(
    {
        "acl", "append", "asyncFetch", "bucketInfo", "callback", "callback-var", "cname", "comp",
        "continuation-token", "cors", "delete", "encryption", "endTime", "group", "inventory",
        "inventoryId", "lifecycle", "link", "live", "location", "logging", "metaQuery", "objectInfo",
        "objectMeta", "partNumber", "policy", "position", "qos", "qosInfo", "referer", "replication",
        "replicationLocation", "replicationProgress", "requestPayment", "resourceGroup", "restore",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "security-token",
        "sequential", "startTime", "stat", "status", "style", "styleName", "symlink", "tagging",
        "transferAcceleration", "uploadId", "uploads", "versionId", "versioning", "versions", "vod",
        "website", "worm", "wormExtend", "wormId", "x-oss-process", "x-oss-request-payer",
        "x-oss-traffic-limit",
    }
)  # fmt: skip

MAX_CLOCK_SKEW_S = 15 * 60
V4_ALGORITHM = "OSS4-HMAC-SHA256"
V4_SIGNED_BY_DEFAULT = ("content-type", "content-md5")


class AuthFailure(Exception):
    """A request the server must refuse with 403 and an OSS error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Credential:
    access_key_secret: str
    security_token: str | None = None


@dataclass
class SignedRequest:
    """What the verifier needs from an HTTP request, already percent-decoded."""

    method: str
    bucket: str  # "" for service-level requests
    key: str  # "" for bucket-level requests
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names


def _v4_encode(text: str, keep_slash: bool) -> str:
    return quote(text.encode("utf-8"), safe="-_.~" + ("/" if keep_slash else ""))


def _check_security_token(cred: Credential, headers: dict[str, str]) -> None:
    token = headers.get("x-oss-security-token")
    if cred.security_token is None:
        if token is not None:
            raise AuthFailure("InvalidSecurityToken", "A security token was sent for a permanent AccessKey.")
    elif token != cred.security_token:
        raise AuthFailure("InvalidSecurityToken", "The security token you provided is invalid.")


def _lookup(credentials: dict[str, Credential], access_key_id: str) -> Credential:
    try:
        return credentials[access_key_id]
    except KeyError:
        raise AuthFailure(
            "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist."
        ) from None


def _check_skew(when: float, now: float) -> None:
    if abs(now - when) > MAX_CLOCK_SKEW_S:
        raise AuthFailure(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )


def verify(
    req: SignedRequest, credentials: dict[str, Credential], region: str, now: float | None = None
) -> str:
    """Check the request's signature; return the access key id or raise :class:`AuthFailure`."""
    now = time.time() if now is None else now
    authorization = req.headers.get("authorization", "")
    if authorization.startswith("OSS "):
        return _verify_v1(req, authorization, credentials, now)
    if authorization.startswith(V4_ALGORITHM + " "):
        return _verify_v4(req, authorization, credentials, region, now)
    if authorization:
        raise AuthFailure("InvalidArgument", "Authorization header is invalid.")
    raise AuthFailure("AccessDenied", "You have no right to access this object because of bucket acl.")


def _verify_v1(req: SignedRequest, authorization: str, credentials: dict[str, Credential], now: float) -> str:
    access_key_id, sep, signature = authorization[4:].partition(":")
    if not sep or not access_key_id:
        raise AuthFailure("InvalidArgument", "Authorization header is invalid.")
    cred = _lookup(credentials, access_key_id.strip())
    date = req.headers.get("x-oss-date") or req.headers.get("date", "")
    parsed = email.utils.parsedate_tz(date) if date else None
    if parsed is None:
        raise AuthFailure("AccessDenied", "The Date header is missing or invalid.")
    _check_skew(float(calendar.timegm(parsed[:9]) - (parsed[9] or 0)), now)
    _check_security_token(cred, req.headers)

    canon_headers = "".join(
        f"{name}:{value}\n" for name, value in sorted(req.headers.items()) if name.startswith("x-oss-")
    )
    resource = f"/{req.bucket}/{req.key}" if req.bucket else "/"
    sub = sorted((k, v) for k, v in req.query if k in V1_SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    string_to_sign = "\n".join(
        [
            req.method,
            req.headers.get("content-md5", ""),
            req.headers.get("content-type", ""),
            date,
            canon_headers + resource,
        ]
    )
    digest = hmac.new(cred.access_key_secret.encode(), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    expected = base64.b64encode(digest).decode()
    if not hmac.compare_digest(expected, signature.strip()):
        raise AuthFailure(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return access_key_id


def _parse_v4_authorization(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in value[len(V4_ALGORITHM) + 1 :].split(","):
        name, sep, content = part.strip().partition("=")
        if not sep:
            raise AuthFailure("InvalidArgument", "Authorization header is invalid.")
        fields[name] = content
    if "Credential" not in fields or "Signature" not in fields:
        raise AuthFailure("InvalidArgument", "Authorization header is invalid.")
    return fields


def _verify_v4(
    req: SignedRequest, authorization: str, credentials: dict[str, Credential], region: str, now: float
) -> str:
    fields = _parse_v4_authorization(authorization)
    scope_parts = fields["Credential"].split("/")
    if len(scope_parts) != 5 or scope_parts[4] != "aliyun_v4_request":
        raise AuthFailure("InvalidArgument", "The Credential in the Authorization header is malformed.")
    access_key_id, scope_date, scope_region, product, _ = scope_parts
    cred = _lookup(credentials, access_key_id)
    if scope_region != region:
        raise AuthFailure(
            "SignatureDoesNotMatch", f"Invalid signing region in Authorization header: {scope_region}"
        )
    if product != "oss":
        raise AuthFailure(
            "SignatureDoesNotMatch", f"Invalid signing product in Authorization header: {product}"
        )
    timestamp = req.headers.get("x-oss-date", "")
    try:
        when = calendar.timegm(time.strptime(timestamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise AuthFailure("AccessDenied", "The x-oss-date header is missing or invalid.") from None
    if timestamp[:8] != scope_date:
        raise AuthFailure(
            "SignatureDoesNotMatch", "The date in the credential scope does not match x-oss-date."
        )
    _check_skew(float(when), now)
    _check_security_token(cred, req.headers)

    additional = [h for h in fields.get("AdditionalHeaders", "").split(";") if h]
    signed = {
        name: value
        for name, value in req.headers.items()
        if name.startswith("x-oss-") or name in V4_SIGNED_BY_DEFAULT or name in additional
    }
    canonical_uri = _v4_encode(f"/{req.bucket}/{req.key}" if req.bucket else "/", keep_slash=True)
    encoded_query = sorted((_v4_encode(k, False), _v4_encode(v, False)) for k, v in req.query)
    canonical_query = "&".join(f"{k}={v}" if v else k for k, v in encoded_query)
    canonical_request = "\n".join(
        [
            req.method,
            canonical_uri,
            canonical_query,
            "".join(f"{k}:{v}\n" for k, v in sorted(signed.items())),
            ";".join(sorted(additional)),
            req.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
        ]
    )
    scope = f"{scope_date}/{scope_region}/{product}/aliyun_v4_request"
    string_to_sign = "\n".join(
        [V4_ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    key = ("aliyun_v4" + cred.access_key_secret).encode()
    for step in (scope_date, scope_region, product, "aliyun_v4_request"):
        key = hmac.new(key, step.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise AuthFailure(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return access_key_id
