"""Where an OSS store's endpoint, region and credentials come from: one rule for every path.

Every OSS store gets its settings through :func:`resolve_options`, whichever way it is opened: by the
Dagster ``StorageResource`` (whose key pair is a Dagster ``EnvVar``, see
:mod:`asr_distill.resources.storage`) or by ``open_storage("oss://…")`` alone, as Ray actors do with their
own environment. The rule, applied to the options given (the variables are declared in
:mod:`asr_distill.settings`):

1. **Endpoint and region**: the given value, else ``OSS_ENDPOINT`` / ``OSS_REGION`` (the region may stay
   unset: it is then derived from an ``oss-<region>[-internal].aliyuncs.com`` endpoint).
2. **Key pair**: the given key id and secret. When neither is given, ``OSS_ACCESS_KEY_ID`` and
   ``OSS_ACCESS_KEY_SECRET``; when only one is given, nothing is filled in and the store refuses it.
3. **STS token**: the given token. Otherwise ``OSS_SECURITY_TOKEN``, but only when the key pair in use is
   the environment's pair (id and secret both equal to the variables): an STS token belongs to the
   temporary key pair it was issued with, so other credentials never pick up a token from the environment.

Applying the rule twice gives what applying it once does (the resource resolves, then ``open_storage``
resolves again). Secrets come only from the options or the environment and are never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asr_distill import settings


def resolve_options(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``options`` with endpoint, region, key pair and STS token completed by the rule above."""
    out = dict(options)
    for name, setting in (("endpoint", settings.OSS_ENDPOINT), ("region", settings.OSS_REGION)):
        if not out.get(name):
            out[name] = setting.get(environ)
    env_pair = (settings.OSS_ACCESS_KEY_ID.raw(environ), settings.OSS_ACCESS_KEY_SECRET.raw(environ))
    pair = (out.get("access_key_id"), out.get("access_key_secret"))
    if not pair[0] and not pair[1]:
        pair = env_pair
    out["access_key_id"], out["access_key_secret"] = pair
    token = out.get("security_token") or None
    if token is None and pair[0] and pair == env_pair:
        token = settings.OSS_SECURITY_TOKEN.get(environ)
    out["security_token"] = token
    return out
