"""An OSS-protocol test server on 127.0.0.1: moto's S3 backend behind an OSS compatibility layer.

The layer (a WSGI app in front of moto's S3 Flask app, in-process) does what OSS does and moto
does not:

* verifies V1 (``OSS ak:sig``) and V4 (``OSS4-HMAC-SHA256``) signatures, STS security tokens and
  clock skew against registered test credentials (403 otherwise);
* speaks OSS headers (``x-oss-*`` <-> ``x-amz-*``, ``x-oss-request-id``, ``x-oss-object-type``,
  ``x-oss-err`` on HEAD errors), upper-case ETags and OSS XML (no S3 namespace, ``<Type>`` in
  listings, ``encoding-type=url`` applied to every name, ``NextMarker`` always present when
  truncated, empty listing parameters accepted);
* forgets a multipart upload once it is completed or aborted (404 ``NoSuchUpload`` afterwards);
* returns ``x-oss-hash-crc64ecma`` (CRC-64/XZ of the stored object or part) and checks
  ``Content-MD5`` (400 ``InvalidDigest``);
* follows OSS range semantics (an unsatisfiable range returns the whole object unless
  ``x-oss-range-behavior: standard``) and OSS's 100 KiB minimum part size;
* keeps HTTP/1.1 connections alive as OSS does (werkzeug's development handler closes every
  connection and then waits 10 ms for stray request bytes, which made every request pay a TCP
  connect and a new server thread).

A fixed per-request latency (:attr:`OSSTestServer.latency_s`, or ``OSSTestServer(latency_s=...)``) stands
in for the round trip to a real endpoint: each request waits that long before it is answered, in its
connection's own thread (werkzeug's threaded server: one thread per connection), so requests on
different connections wait concurrently, as they would on a real network. Requests are counted per
method in :attr:`OSSTestServer.stats` (``GET``, ``HEAD``, ``PUT``, ``POST``, ``DELETE``; a bucket listing
counts as ``LIST``, not ``GET``; ``GET_RANGE`` counts the ranged object GETs among the ``GET``), in all
and per bucket (``"GET <bucket>"``; :meth:`OSSTestServer.request_counts`).

Faults are injected at run time through :attr:`OSSTestServer.faults` (seeded, so deterministic for
a sequential client): 503s, connection resets before a request is executed or after it was
executed (a lost response), resets in the middle of a GET body, slow answers (client timeouts), corrupted GET bodies, corrupted uploads, and a
permanent-403 mode.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import io
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import crcmod
import moto.s3.models as _moto_s3_models  # importing moto takes ~1 s: only tests that need it import this
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.request import (
    PRESERVED_HEADER_NAMES_ENVIRON_KEY,
    environ_key_for_header,
    should_preserve_original_header_name,
)
from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.test import run_wsgi_app

from .auth import AuthFailure, Credential, SignedRequest, verify

OSS_MIN_PART_SIZE = 100 * 1024
# OSS accepts parts down to 100 KiB (S3: 5 MiB); moto reads this module global at complete time.
_moto_s3_models.S3_UPLOAD_PART_MIN_SIZE = OSS_MIN_PART_SIZE

_crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
assert _crc64(b"123456789") == 0x995DC9BBDF1939FA, "CRC-64/XZ check value"

_MOTO_AUTH = (
    "AWS4-HMAC-SHA256 Credential=OSSLAYER/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
)
_S3_NS = re.compile(rb'\s+xmlns="http://s3\.amazonaws\.com/doc/2006-03-01/"')
_LIST_PARAMS = ("prefix", "delimiter", "marker", "continuation-token", "start-after", "max-keys")
# x-oss-* request headers that are OSS transport/auth details, not forwarded to moto.
# Set in the WSGI environ once the layer has read the whole request body: only then may the
# connection serve another request.
BODY_CONSUMED = "oss_layer.body_consumed"
IDLE_KEEPALIVE_S = 60.0
_DROP_REQUEST_HEADERS = frozenset(
    {"authorization", "x-oss-date", "x-oss-content-sha256", "x-oss-security-token", "x-oss-range-behavior"}
)


def crc64(data: bytes) -> int:
    """CRC-64/XZ (ECMA-182, reflected), as OSS returns in ``x-oss-hash-crc64ecma``."""
    return _crc64(data)


@dataclass
class FaultConfig:
    """What the server does wrong, per request, drawn from ``random.Random(seed)``.

    Rates are fractions in [0, 1] of the requests they apply to. ``deny_all`` answers every request
    with 403 AccessDenied; ``deny`` does so only for the requests it returns True for, called with
    ``(method, bucket, key)`` (a bucket policy or RAM policy that lacks one permission, e.g. reads
    denied but listing allowed). ``only_methods`` restricts the random faults to those HTTP methods.
    """

    seed: int = 0
    error_rate: float = 0.0  # any request: 503 ServiceUnavailable
    reset_rate: float = 0.0  # any request: TCP reset before answering (nothing is executed)
    reset_mid_body_rate: float = 0.0  # GET object: half the body, then a TCP reset
    corrupt_read_rate: float = 0.0  # GET object: one byte flipped, CRC header of the real object
    corrupt_write_rate: float = 0.0  # PUT object/part: one byte flipped on arrival
    lost_response_rate: float = 0.0  # any request: executed, then the connection is reset
    delay_rate: float = 0.0  # any request: answered only after delay_s (then executed normally)
    delay_s: float = 0.0
    deny_all: bool = False
    deny: Callable[[str, str, str], bool] | None = None
    only_methods: frozenset[str] | None = None


@dataclass
class _Call:
    method: str
    bucket: str
    key: str
    query: dict[str, str]
    status: int = 0
    fault: str = ""


@dataclass
class _Parsed:
    method: str
    bucket: str
    key: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    environ: dict[str, Any] = field(repr=False)

    @property
    def qdict(self) -> dict[str, str]:
        return dict(self.query)

    @property
    def is_object(self) -> bool:
        return bool(self.bucket and self.key)


class _Reset(ConnectionResetError):
    """Raised by the layer to make the request handler abort the connection with a TCP RST."""


class OSSCompatLayer:
    """The WSGI application: OSS semantics over moto's S3 app."""

    def __init__(self, region: str, latency_s: float = 0.0) -> None:
        self.region = region
        self.latency_s = latency_s  # waited before answering each request (a stand-in for the network)
        self.credentials: dict[str, Credential] = {}
        self.faults = FaultConfig()
        self._rng = random.Random(0)
        self._rng_lock = threading.Lock()
        self._moto = create_backend_app("s3")
        self._moto_lock = threading.Lock()
        self._crc_cache: dict[tuple[str, str], tuple[str, int]] = {}
        self._ids = iter(range(1, 1 << 62))
        self.calls: collections.deque[_Call] = collections.deque(maxlen=100_000)
        self.total_calls = 0
        self._finished_uploads: set[str] = set()
        self.stats: collections.Counter[str] = collections.Counter()
        self.clock_offset_s = 0.0  # added to the server's clock (to test skew)

    # -- configuration ---------------------------------------------------------------------
    def set_faults(self, faults: FaultConfig) -> None:
        with self._rng_lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def _draw(self, rate: float, method: str) -> bool:
        if rate <= 0:
            return False
        only = self.faults.only_methods
        if only is not None and method not in only:
            return False
        with self._rng_lock:
            return self._rng.random() < rate

    def _request_id(self) -> str:
        return f"{next(self._ids):024X}"

    # -- request parsing -------------------------------------------------------------------
    @staticmethod
    def _parse(environ: dict[str, Any]) -> _Parsed:
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        raw_path = raw_uri.split("?", 1)[0]
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8")
        bucket, _, key = path.lstrip("/").partition("/")
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        preserved = environ.get(PRESERVED_HEADER_NAMES_ENVIRON_KEY, {})
        headers: dict[str, str] = {}
        for env_key, value in environ.items():
            if env_key.startswith("HTTP_"):
                name = preserved.get(env_key) or env_key[5:].replace("_", "-")
                headers[name.lower()] = value
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = stream.read(int(length))
        elif environ.get("wsgi.input_terminated") or "chunked" in headers.get("transfer-encoding", ""):
            body = stream.read()
        else:
            body = b""
        environ[BODY_CONSUMED] = True
        return _Parsed(environ["REQUEST_METHOD"], bucket, key, raw_path, query, headers, body, environ)

    # -- responses -------------------------------------------------------------------------
    def _error(
        self,
        req: _Parsed,
        status: int,
        code: str,
        message: str,
        start_response: Callable[..., Any],
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> list[bytes]:
        rid = self._request_id()
        root = ET.Element("Error")
        for tag, text in (("Code", code), ("Message", message), ("RequestId", rid), ("HostId", "127.0.0.1")):
            ET.SubElement(root, tag).text = text
        if req.bucket:
            ET.SubElement(root, "BucketName").text = req.bucket
        if req.key:
            ET.SubElement(root, "Key").text = req.key
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        headers = [("x-oss-request-id", rid), *extra_headers]
        if req.method == "HEAD":
            headers.append(("x-oss-err", base64.b64encode(body).decode()))
            body = b""
        headers += [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [body]

    # -- moto ------------------------------------------------------------------------------
    def _call_moto(
        self,
        environ: dict[str, Any],
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        env = {k: v for k, v in environ.items() if not k.startswith("HTTP_")}
        env.pop("CONTENT_TYPE", None)
        env.pop(PRESERVED_HEADER_NAMES_ENVIRON_KEY, None)
        qs = urlencode(query, quote_via=quote)
        path = raw_path
        env.update(
            {
                "REQUEST_METHOD": method,
                "QUERY_STRING": qs,
                "RAW_URI": path + (f"?{qs}" if qs else ""),
                "REQUEST_URI": path + (f"?{qs}" if qs else ""),
                "wsgi.input": io.BytesIO(body),
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.input_terminated": False,
            }
        )
        preserved: dict[str, str] = {}
        for name, value in headers.items():
            if name == "content-type":
                env["CONTENT_TYPE"] = value
                continue
            if name in ("content-length", "transfer-encoding"):
                continue
            env_key = environ_key_for_header(name)
            env[env_key] = value
            if should_preserve_original_header_name(name):
                preserved[env_key] = name
        env[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = preserved
        # The layer has already authenticated the caller; moto only needs to see a signed request.
        env["HTTP_AUTHORIZATION"] = _MOTO_AUTH
        with self._moto_lock:
            app_iter, status, resp_headers = run_wsgi_app(self._moto, env, buffered=True)
            try:
                data = b"".join(app_iter)
            finally:
                close = getattr(app_iter, "close", None)
                if close:
                    close()
        return int(status.split()[0]), list(resp_headers.items()), data

    def _object_crc(self, req: _Parsed, etag: str) -> int | None:
        """CRC64 of the whole stored object, cached per ETag, fetched from moto when unknown."""
        cached = self._crc_cache.get((req.bucket, req.key))
        if cached and cached[0] == etag:
            return cached[1]
        status, headers, data = self._call_moto(req.environ, "GET", req.raw_path, [], {}, b"")
        if status != 200:
            return None
        crc = crc64(data)
        self._crc_cache[(req.bucket, req.key)] = (_header(headers, "etag") or "", crc)
        return crc

    # -- translation -----------------------------------------------------------------------
    def _to_moto(self, req: _Parsed) -> tuple[list[tuple[str, str]], dict[str, str], bytes]:
        query = list(req.query)
        q = req.qdict
        is_listing = req.method == "GET" and req.bucket and not req.key and _is_plain_bucket_get(q)
        if is_listing:
            query = [(k, v) for k, v in query if not (k in _LIST_PARAMS and v == "")]
            query = [
                (k, v) for k, v in query if k != "encoding-type" and not (k == "fetch-owner" and v == "false")
            ]
        headers: dict[str, str] = {}
        for name, value in req.headers.items():
            if name in _DROP_REQUEST_HEADERS or name in ("host", "accept-encoding", "user-agent"):
                continue
            if name in ("if-match", "if-none-match"):
                value = value.lower()
            if name.startswith("x-oss-"):
                name = "x-amz-" + name[6:]
            headers[name] = value
        if "x-amz-copy-source" in headers:
            # OSS: /bucket/url-encoded-key, like S3; ETag conditions are case-folded as above.
            for cond in ("x-amz-copy-source-if-match", "x-amz-copy-source-if-none-match"):
                if cond in headers:
                    headers[cond] = headers[cond].lower()
        body = req.body
        if req.method == "POST" and "uploadId" in q and body:
            body = re.sub(rb"<ETag>(.*?)</ETag>", lambda m: b"<ETag>" + m.group(1).lower() + b"</ETag>", body)
        return query, headers, body

    @staticmethod
    def _rewrite_xml(body: bytes, req: _Parsed, finished_uploads: frozenset[str] = frozenset()) -> bytes:
        body = _S3_NS.sub(b"", body, count=1)
        if not body.strip():
            return body
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return body
        for etag in root.iter("ETag"):
            if etag.text:
                etag.text = etag.text.upper()
        if root.tag == "ListBucketResult":
            _rewrite_listing(root, req.qdict)
        elif root.tag == "ListMultipartUploadsResult":
            for upload in root.findall("Upload"):
                if upload.findtext("UploadId") in finished_uploads:
                    root.remove(upload)
            for tag in ("NextKeyMarker", "NextUploadIdMarker"):
                if root.find(tag) is None:
                    ET.SubElement(root, tag).text = ""
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    # -- WSGI entry ------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        req = self._parse(environ)
        call = _Call(req.method, req.bucket, req.key, req.qdict)
        with self._rng_lock:  # counters exact under concurrent connections
            self.calls.append(call)
            self.total_calls += 1
            self.stats["requests"] += 1
            kind = _method_class(req)
            self.stats[kind] += 1
            self.stats[f"{kind} {req.bucket}"] += 1  # per bucket too: raw and lake apart
            if req.method == "GET" and req.is_object and "range" in req.headers:
                self.stats["GET_RANGE"] += 1
                self.stats[f"GET_RANGE {req.bucket}"] += 1
        if self.latency_s > 0:
            # Only this connection's thread waits: other connections are served meanwhile.
            time.sleep(self.latency_s)
        result = self._handle(req, call, start_response)
        return result

    def _handle(self, req: _Parsed, call: _Call, start_response: Callable[..., Any]) -> Iterable[bytes]:
        faults = self.faults
        if self._draw(faults.reset_rate, req.method):
            call.fault = "reset"
            self.stats["reset"] += 1
            raise _Reset("injected connection reset")
        if self._draw(faults.error_rate, req.method):
            call.fault, call.status = "503", 503
            self.stats["503"] += 1
            return self._error(
                req, 503, "ServiceUnavailable", "Please reduce your request rate.", start_response
            )
        if self._draw(faults.delay_rate, req.method):
            call.fault = "delay"
            self.stats["delay"] += 1
            time.sleep(faults.delay_s)
        if faults.deny_all or (faults.deny is not None and faults.deny(req.method, req.bucket, req.key)):
            call.fault, call.status = "deny", 403
            self.stats["deny"] += 1
            return self._error(req, 403, "AccessDenied", "Access denied by bucket policy.", start_response)
        try:
            verify(
                SignedRequest(req.method, req.bucket, req.key, req.query, req.headers),
                self.credentials,
                self.region,
                now=time.time() + self.clock_offset_s,
            )
        except AuthFailure as exc:
            call.status = 403
            self.stats["auth_failed"] += 1
            return self._error(req, 403, exc.code, exc.message, start_response)

        body = req.body
        q = req.qdict
        is_upload = req.method == "PUT" and req.is_object and "x-oss-copy-source" not in req.headers
        if is_upload and body and self._draw(faults.corrupt_write_rate, req.method):
            call.fault = "corrupt_write"
            self.stats["corrupt_write"] += 1
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0x5A
            body = bytes(flipped)
        md5 = req.headers.get("content-md5")
        if md5 is not None and base64.b64encode(hashlib.md5(body).digest()).decode() != md5.strip():
            call.status = 400
            return self._error(
                req, 400, "InvalidDigest", "The Content-MD5 you specified was invalid.", start_response
            )
        req.body = body

        upload_id = q.get("uploadId")
        if upload_id is not None and upload_id in self._finished_uploads:
            # moto accepts a second complete of the same upload; OSS has forgotten the upload id.
            call.status = 404
            return self._error(
                req, 404, "NoSuchUpload", "The specified upload does not exist.", start_response
            )

        query, headers, mbody = self._to_moto(req)
        status, resp_headers, data = self._call_moto(
            req.environ, req.method, req.raw_path, query, headers, mbody
        )
        if upload_id is not None and status < 300 and req.method in ("POST", "DELETE"):
            self._finished_uploads.add(upload_id)
        if self._draw(faults.lost_response_rate, req.method):
            call.fault, call.status = "lost_response", status
            self.stats["lost_response"] += 1
            raise _Reset("injected connection reset")
        is_range = "range" in req.headers
        if (
            status == 416
            and req.method == "GET"
            and req.headers.get("x-oss-range-behavior", "").lower() != "standard"
        ):
            # OSS ignores an unsatisfiable range and returns the whole object.
            query2 = [(k, v) for k, v in query]
            headers2 = {k: v for k, v in headers.items() if k != "range"}
            status, resp_headers, data = self._call_moto(
                req.environ, "GET", req.raw_path, query2, headers2, b""
            )
            is_range = False
        call.status = status

        out: list[tuple[str, str]] = []
        for name, value in resp_headers:
            lower = name.lower()
            if lower.startswith("x-amzn-") or lower in ("x-amz-request-id", "x-amz-id-2", "server"):
                continue
            if lower.startswith("x-amz-checksum") or lower == "x-amz-server-side-encryption":
                continue
            if lower.startswith("x-amz-"):
                name = "x-oss-" + name[6:]
            if lower == "etag":
                value = value.upper()
            if lower == "content-length":
                continue
            out.append((name, value))
        rid = self._request_id()
        out.append(("x-oss-request-id", rid))

        if status >= 300:
            if req.method == "HEAD":
                # moto answers HEAD errors without a body; OSS puts the error XML in x-oss-err.
                st, _, err = self._call_moto(req.environ, "GET", req.raw_path, query, headers, b"")
                if st == status and err:
                    out.append(("x-oss-err", base64.b64encode(err).decode()))
            out.append(("Content-Length", str(len(data) if req.method != "HEAD" else 0)))
            start_response(f"{status} {_REASONS.get(status, 'Error')}", out)
            return [data if req.method != "HEAD" else b""]

        if req.is_object:
            data, out = self._object_response(req, q, status, out, data, is_range, resp_headers)
        elif data:
            data = self._rewrite_xml(data, req, frozenset(self._finished_uploads))

        if req.method == "HEAD":
            # Keep moto's Content-Length (the object size) for HEAD.
            out.append(("Content-Length", _header(resp_headers, "content-length") or "0"))
            start_response(f"{status} {_REASONS.get(status, 'OK')}", out)
            return [b""]
        out.append(("Content-Length", str(len(data))))

        if req.method == "GET" and req.is_object and not _is_subresource(q) and data:
            if self._draw(faults.corrupt_read_rate, req.method):
                call.fault = "corrupt_read"
                self.stats["corrupt_read"] += 1
                flipped = bytearray(data)
                flipped[len(flipped) // 2] ^= 0x01
                data = bytes(flipped)
            if self._draw(faults.reset_mid_body_rate, req.method):
                call.fault = "reset_mid_body"
                self.stats["reset_mid_body"] += 1
                start_response(f"{status} {_REASONS.get(status, 'OK')}", out)
                return _cut_body(data)
        start_response(f"{status} {_REASONS.get(status, 'OK')}", out)
        return [data]

    def _object_response(
        self,
        req: _Parsed,
        q: dict[str, str],
        status: int,
        out: list[tuple[str, str]],
        data: bytes,
        is_range: bool,
        moto_headers: list[tuple[str, str]],
    ) -> tuple[bytes, list[tuple[str, str]]]:
        etag = _header(moto_headers, "etag") or ""
        crc: int | None = None
        if req.method == "PUT" and "partNumber" in q and "uploadId" in q:
            crc = crc64(req.body)
        elif req.method == "PUT" and "x-oss-copy-source" not in req.headers and not _is_subresource(q):
            crc = crc64(req.body)
            self._crc_cache[(req.bucket, req.key)] = (etag, crc)
        elif (req.method == "PUT" and "x-oss-copy-source" in req.headers) or (
            req.method == "POST" and "uploadId" in q
        ):
            # copy / complete multipart: the new object's CRC
            crc = self._object_crc(req, _xml_text(data, "ETag") or "")
        elif req.method == "GET" and not _is_subresource(q) and not is_range:
            crc = crc64(data)
            self._crc_cache[(req.bucket, req.key)] = (etag, crc)
        elif req.method in ("GET", "HEAD") and not _is_subresource(q):
            crc = self._object_crc(req, etag)
        if crc is not None:
            out.append(("x-oss-hash-crc64ecma", str(crc)))
        if req.method in ("GET", "HEAD") and not _is_subresource(q):
            out.append(("x-oss-object-type", "Multipart" if "-" in etag else "Normal"))
            out.append(("x-oss-storage-class", "Standard"))
        if data and req.method in ("POST", "PUT"):
            data = self._rewrite_xml(data, req)
        return data, out

    # -- direct helpers (no HTTP, no auth) -------------------------------------------------
    def seed_objects(self, bucket: str, items: dict[str, bytes]) -> None:
        """Store objects straight into moto's backend (fast fixture data for read/list tests)."""
        backend = _moto_s3_models.s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        with self._moto_lock:
            for key, value in items.items():
                backend.put_object(bucket, key, value)

    def create_bucket(self, name: str) -> None:
        env = _bare_environ()
        status, _, data = self._call_moto(env, "PUT", f"/{name}", [], {}, b"")
        if status != 200:
            raise RuntimeError(f"creating test bucket {name!r} failed: {status} {data[:200]!r}")


METHOD_CLASSES = ("GET", "HEAD", "PUT", "POST", "DELETE", "LIST")


def _method_class(req: _Parsed) -> str:
    """The counter a request goes to: its HTTP method, or ``LIST`` for a bucket listing."""
    if req.method == "GET" and req.bucket and not req.key and _is_plain_bucket_get(req.qdict):
        return "LIST"
    return req.method


def _bare_environ() -> dict[str, Any]:
    return {
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
    }


def _cut_body(data: bytes) -> Iterator[bytes]:
    yield data[: len(data) // 2]
    raise _Reset("injected connection reset in the middle of the body")


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _xml_text(data: bytes, tag: str) -> str | None:
    try:
        root = ET.fromstring(_S3_NS.sub(b"", data, count=1))
    except ET.ParseError:
        return None
    node = root.find(tag)
    return node.text if node is not None else None


_OBJECT_SUBRESOURCES = frozenset(
    {"acl", "tagging", "symlink", "objectMeta", "restore", "uploads", "uploadId"}
)


def _is_subresource(q: dict[str, str]) -> bool:
    return bool(_OBJECT_SUBRESOURCES & q.keys())


def _is_plain_bucket_get(q: dict[str, str]) -> bool:
    allowed = {"list-type", "encoding-type", "fetch-owner", *_LIST_PARAMS}
    return set(q) <= allowed


def _rewrite_listing(root: ET.Element, q: dict[str, str]) -> None:
    """Make a moto ListBucketResult look like OSS's (v1 and v2)."""
    if root.findtext("IsTruncated") == "true" and q.get("list-type") != "2":
        # OSS's NextMarker is the last name returned (moto's is an opaque token).
        names = [n.text or "" for n in root.findall("Contents/Key")]
        names += [n.text or "" for n in root.findall("CommonPrefixes/Prefix")]
        marker = root.find("NextMarker")
        if marker is None:
            marker = ET.SubElement(root, "NextMarker")
        marker.text = max(names) if names else ""
    for contents in root.findall("Contents"):
        if contents.find("Type") is None:
            etag = contents.find("ETag")
            kind = ET.Element("Type")
            kind.text = "Multipart" if etag is not None and "-" in (etag.text or "") else "Normal"
            contents.insert(list(contents).index(etag) + 1 if etag is not None else len(contents), kind)

    encoding = root.find("EncodingType")
    if encoding is not None:
        root.remove(encoding)
    token = root.find("NextContinuationToken")
    if q.get("encoding-type") != "url":
        return
    names = [root.find(tag) for tag in ("Prefix", "Marker", "NextMarker", "Delimiter", "StartAfter")]
    names += root.findall("Contents/Key") + root.findall("CommonPrefixes/Prefix")
    names += [token, root.find("ContinuationToken")]
    for node in names:
        if node is not None and node.text:
            node.text = quote(node.text, safe="/")
    ET.SubElement(root, "EncodingType").text = "url"


_REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    412: "Precondition Failed",
    416: "Requested Range Not Satisfiable",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class OSSTestServer:
    """The layer served by werkzeug on 127.0.0.1 with an ephemeral port, in a daemon thread."""

    def __init__(self, region: str = "cn-test-1", latency_s: float = 0.0) -> None:
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self.layer = OSSCompatLayer(region, latency_s)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> OSSTestServer:
        self._server = _Server("127.0.0.1", 0, self.layer, handler=_Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="oss-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_idle_connections()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> OSSTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- convenience -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def region(self) -> str:
        return self.layer.region

    @property
    def faults(self) -> FaultConfig:
        return self.layer.faults

    @faults.setter
    def faults(self, value: FaultConfig) -> None:
        self.layer.set_faults(value)

    @contextlib.contextmanager
    def injected(self, **kwargs: Any) -> Iterator[FaultConfig]:
        """Inject faults for the duration of a ``with`` block."""
        before = self.layer.faults
        cfg = FaultConfig(**kwargs)
        self.faults = cfg
        try:
            yield cfg
        finally:
            self.faults = before

    @property
    def latency_s(self) -> float:
        """Seconds each request waits before it is answered (0: none)."""
        return self.layer.latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        if value < 0:
            raise ValueError("latency_s must be >= 0")
        self.layer.latency_s = float(value)

    @property
    def stats(self) -> collections.Counter[str]:
        return self.layer.stats

    def request_counts(self, bucket: str | None = None) -> dict[str, int]:
        """Requests per method class (:data:`METHOD_CLASSES`, plus ``GET_RANGE``) since the counters were
        last cleared, in all buckets or in ``bucket``."""
        names = (*METHOD_CLASSES, "GET_RANGE")
        with self.layer._rng_lock:
            if bucket is None:
                return {m: int(self.layer.stats[m]) for m in names}
            return {m: int(self.layer.stats[f"{m} {bucket}"]) for m in names}

    @property
    def calls(self) -> collections.deque[_Call]:
        return self.layer.calls

    def mark(self) -> int:
        """A position in the request log, for :meth:`calls_since`."""
        return self.layer.total_calls

    def calls_since(self, mark: int) -> list[_Call]:
        """The requests received after :meth:`mark` returned ``mark`` (oldest first)."""
        with self.layer._rng_lock:
            count = self.layer.total_calls - mark
            calls = list(self.layer.calls)
        if count > len(calls):
            raise RuntimeError("request log overflowed; take the mark closer to the calls")
        return calls[len(calls) - count :] if count else []

    def add_credentials(
        self, access_key_id: str, access_key_secret: str, security_token: str | None = None
    ) -> None:
        self.layer.credentials[access_key_id] = Credential(access_key_secret, security_token)

    def seed_objects(self, bucket: str, items: dict[str, bytes]) -> None:
        self.layer.seed_objects(bucket, items)

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.layer.create_bucket(name)
        return name


class _Handler(MotoRequestHandler):
    """moto's handler with HTTP/1.1 keep-alive (werkzeug's own answers ``Connection: close``)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = IDLE_KEEPALIVE_S  # an idle kept-alive connection is closed after this

    def setup(self) -> None:
        super().setup()
        # Answers are written in one piece, but Nagle + delayed ACK would still stall a kept-alive
        # connection whenever a write is split (40 ms on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.open_connections.add(self.connection)
        self.server.app.stats["connections"] += 1  # TCP connections accepted (keep-alive tests)

    def finish(self) -> None:
        self.server.open_connections.discard(self.connection)
        super().finish()

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if "timed out" not in format % args:  # an idle kept-alive connection closing is no error
            super().log_error(format, *args)

    def run_wsgi(self) -> None:
        """One request: call the app, send its answer, keep the connection if that is safe."""
        self.environ = environ = self.make_environ()
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        pending: list[Any] = []  # [status, headers] set by start_response, not yet sent
        sent = False

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            if exc_info and sent:
                raise exc_info[1].with_traceback(exc_info[2])
            pending[:] = [status, headers]
            return write

        def write(data: bytes) -> None:
            nonlocal sent
            if not sent:
                status, headers = pending
                code, _, reason = status.partition(" ")
                self.send_response(int(code), reason)
                names = set()
                for name, value in headers:
                    names.add(name.lower())
                    self.send_header(name, value)
                if "content-length" not in names and self.command != "HEAD":
                    # No length: the body ends when the connection does.
                    self.send_header("Connection", "close")
                # Status line, headers and the first body chunk in one write (end_headers() would
                # flush the headers alone).
                self._headers_buffer.append(b"\r\n")
                if data:
                    self._headers_buffer.append(data)
                self.flush_headers()
                sent = True
            elif data:
                self.wfile.write(data)

        try:
            app_iter = self.server.app(environ, start_response)
            try:
                for data in app_iter:
                    write(data)
                if not sent:
                    write(b"")
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        except (TimeoutError, ConnectionError) as exc:
            self.connection_dropped(exc, environ)
            self.close_connection = True
            return
        except Exception as exc:  # a bug in the layer or moto: answer 500 if still possible
            self.close_connection = True
            print(f"OSS test server: error on {self.command} {self.path}: {exc!r}", file=sys.stderr)
            if not sent:
                body = b"Internal Server Error"
                with contextlib.suppress(Exception):
                    self.send_response(500, "Internal Server Error")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
            return
        if not environ.get(BODY_CONSUMED):
            # Unread request bytes would be taken for the next request line.
            self.close_connection = True

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        if isinstance(error, _Reset):
            # What was written (half a body) reaches the client before the reset, as on a real
            # network: a RST discards whatever is still queued for sending.
            _wait_until_sent(self.connection)
            # SO_LINGER with a zero timeout turns the close into a TCP RST (no FIN first).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.server.aborted.add(self.connection)


def _wait_until_sent(sock: socket.socket, limit_s: float = 2.0) -> None:
    """Wait (bounded) until the kernel has delivered everything written to ``sock``."""
    try:
        import fcntl
        import termios

        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            if unsent <= 0:
                return
            time.sleep(0.001)
    except (ImportError, OSError, AttributeError):  # not Linux: give the client a moment
        time.sleep(0.01)


class _Server(ThreadedWSGIServer):
    # Handler threads of kept-alive connections wait for the next request: stop() closes their
    # sockets rather than waiting for them.
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aborted: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.open_connections: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def close_idle_connections(self) -> None:
        for conn in list(self.open_connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def shutdown_request(self, request: Any) -> None:
        if request in self.aborted:
            self.aborted.discard(request)
            self.close_request(request)
        else:
            super().shutdown_request(request)
