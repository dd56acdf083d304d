"""Which raw prefixes are complete and should be processed: the core of ``raw_prefix_sensor``.

One call of :func:`plan_tick` is one sensor tick. It lists the top-level prefixes of the raw store
(one shallow listing), looks deeper only at prefixes that are not launched yet (bounded per tick) and at
a small rotating subset of launched ones (change detection), and returns what to launch plus the new
cursor. The caller turns launches into run requests whose run key is ``<prefix>@<fingerprint>``:
Dagster refuses a second run with the same key for the same sensor, so neither a restarted daemon nor
a lost cursor can launch the same content of a prefix twice.

Completeness of a prefix:

* marker mode (default): the marker object (``_SUCCESS``) exists directly under the prefix. For a
  prefix that changed after it was launched, the marker must also have been rewritten since.
* quiet mode (``quiet_seconds > 0``), in addition: the listing fingerprint was seen unchanged for at
  least ``quiet_seconds`` (two sightings that far apart) and no object is newer than that. Object mtimes
  alone are never trusted (``rsync -a`` keeps old mtimes on files of a half-copied prefix).

The cursor is compact JSON, version 1::

    {"v": 1,
     "d": {"<prefix>": "<fp12>.<marker8>"},   launched: fingerprint launched, marker version then
     "c": {"<prefix>": "<fp12>"},             changed since launch, already reported (not re-run yet)
     "q": {"<prefix>": ["<fp12>", <since>]},  quiet mode: unchanged since <since> (unix seconds)
     "p": "<prefix>", "r": "<prefix>"}         rotation positions (pending / re-check)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asr_distill import settings as env_registry
from asr_distill.storage import ObjectNotFoundError, Storage, StorageError

CURSOR_VERSION = 1
FP_CHARS = 12
MARKER_TAG_CHARS = 8

# The variables are declared (name, default, doc) in asr_distill.settings.
ENV_MARKER = env_registry.SENSOR_MARKER.name
ENV_QUIET_SECONDS = env_registry.SENSOR_QUIET_SECONDS.name
ENV_RERUN_CHANGED = env_registry.SENSOR_RERUN_CHANGED.name
ENV_INTERVAL_SECONDS = env_registry.SENSOR_INTERVAL_SECONDS.name
ENV_MAX_RUNS_PER_TICK = env_registry.SENSOR_MAX_RUNS_PER_TICK.name
ENV_PROBES_PER_TICK = env_registry.SENSOR_PROBES_PER_TICK.name
ENV_RECHECKS_PER_TICK = env_registry.SENSOR_RECHECKS_PER_TICK.name
ENV_DEFAULT_STATUS = env_registry.SENSOR_DEFAULT_STATUS.name

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class DiscoverySettings:
    """How the sensor decides what is complete and how much work one tick may do."""

    marker: str = "_SUCCESS"
    quiet_seconds: float = 0.0  # 0: marker mode only
    rerun_changed: bool = False
    interval_seconds: int = 60
    max_runs_per_tick: int = 100
    probes_per_tick: int = 1000  # not-yet-launched prefixes examined per tick (a stat or a listing each)
    rechecks_per_tick: int = 50  # launched prefixes re-listed per tick to detect changes (0: never)
    default_running: bool = False

    def __post_init__(self) -> None:
        m = self.marker
        if (
            not m
            or "/" in m
            or "\\" in m
            or m in (".", "..")
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in m)
        ):
            raise ValueError(f"marker name {m!r} must be a plain object name (no '/', not empty)")
        if self.quiet_seconds < 0:
            raise ValueError(f"quiet_seconds must be >= 0, got {self.quiet_seconds}")
        if self.interval_seconds < 1:
            raise ValueError(f"interval_seconds must be >= 1, got {self.interval_seconds}")
        for name in ("max_runs_per_tick", "probes_per_tick"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rechecks_per_tick < 0:
            raise ValueError(f"rechecks_per_tick must be >= 0, got {self.rechecks_per_tick}")

    @property
    def quiet_mode(self) -> bool:
        return self.quiet_seconds > 0


def _env_number(environ: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a valid {kind.__name__}") from None


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"${name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def settings_from_env(environ: Mapping[str, str] | None = None) -> DiscoverySettings:
    """Settings from ``ASR_DISTILL_SENSOR_*`` variables; a bad value raises ``ValueError`` naming it."""
    env = os.environ if environ is None else environ
    status = env.get(ENV_DEFAULT_STATUS, "").strip().upper() or "STOPPED"
    if status not in ("STOPPED", "RUNNING"):
        raise ValueError(f"${ENV_DEFAULT_STATUS}={status!r} must be STOPPED or RUNNING")
    d = DiscoverySettings()
    try:
        return DiscoverySettings(
            marker=env.get(ENV_MARKER, "").strip() or d.marker,
            quiet_seconds=_env_number(env, ENV_QUIET_SECONDS, d.quiet_seconds, float),
            rerun_changed=_env_bool(env, ENV_RERUN_CHANGED, d.rerun_changed),
            interval_seconds=_env_number(env, ENV_INTERVAL_SECONDS, d.interval_seconds, int),
            max_runs_per_tick=_env_number(env, ENV_MAX_RUNS_PER_TICK, d.max_runs_per_tick, int),
            probes_per_tick=_env_number(env, ENV_PROBES_PER_TICK, d.probes_per_tick, int),
            rechecks_per_tick=_env_number(env, ENV_RECHECKS_PER_TICK, d.rechecks_per_tick, int),
            default_running=status == "RUNNING",
        )
    except ValueError as exc:
        if "$" in str(exc):
            raise
        raise ValueError(f"sensor settings from ASR_DISTILL_SENSOR_* variables: {exc}") from None


# -- listings -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefixListing:
    """What one recursive listing of a prefix says about it."""

    fingerprint: str  # short sha256 over (key, version) of every object except the marker
    objects: int  # excluding the marker
    newest_mtime: float | None  # None when the backend gives no mtimes or there are no objects
    marker_tag: str  # short hash of the marker's version, "" when there is no marker


def _short(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def list_prefix(store: Storage, prefix: str, marker: str) -> PrefixListing:
    """Stream the listing of ``prefix`` (``name/``) once: fingerprint, count, newest mtime, marker."""
    marker_key = prefix + marker
    h = hashlib.sha256(b"asr_distill.discovery/1\n")
    n = 0
    newest: float | None = None
    mtimes_known = True
    marker_tag = ""
    for obj in store.iter_objects(prefix):
        if obj.key == marker_key:
            # mtime too: an empty marker rewritten on an object store keeps its etag (same content).
            marker_tag = _short(f"{obj.version_tag}|{obj.mtime}", MARKER_TAG_CHARS)
            continue
        h.update(f"{obj.key}\t{obj.version_tag}\n".encode("utf-8", "surrogatepass"))
        n += 1
        if obj.mtime is None:
            mtimes_known = False
        elif newest is None or obj.mtime > newest:
            newest = obj.mtime
    return PrefixListing(h.hexdigest()[:FP_CHARS], n, newest if mtimes_known else None, marker_tag)


def run_key_for(partition: str, fingerprint: str) -> str:
    """The run key of one content version of a prefix (stable across restarts and lost cursors)."""
    return f"{partition}@{fingerprint}"


# -- cursor -------------------------------------------------------------------------------------------


@dataclass
class CursorState:
    done: dict[str, str] = field(default_factory=dict)  # prefix -> "fp.marker"
    changed: dict[str, str] = field(default_factory=dict)  # prefix -> fp reported as changed
    quiet: dict[str, tuple[str, float]] = field(default_factory=dict)  # prefix -> (fp, unchanged since)
    pending_pos: str = ""
    recheck_pos: str = ""

    @classmethod
    def loads(cls, text: str | None) -> tuple[CursorState, str | None]:
        """Parse a cursor; an unreadable one gives an empty state and a warning (never a crash)."""
        if not text:
            return cls(), None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION:
                raise ValueError(
                    f"unknown cursor version {data.get('v') if isinstance(data, dict) else None!r}"
                )
            state = cls(
                done={str(k): str(v) for k, v in data.get("d", {}).items()},
                changed={str(k): str(v) for k, v in data.get("c", {}).items()},
                quiet={str(k): (str(v[0]), float(v[1])) for k, v in data.get("q", {}).items()},
                pending_pos=str(data.get("p", "")),
                recheck_pos=str(data.get("r", "")),
            )
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            return (
                cls(),
                f"cursor unreadable ({exc}); starting from an empty cursor (run keys dedup launches)",
            )
        return state, None

    def dumps(self) -> str:
        data: dict[str, Any] = {"v": CURSOR_VERSION, "d": self.done}
        if self.changed:
            data["c"] = self.changed
        if self.quiet:
            data["q"] = {k: [fp, round(t, 3)] for k, (fp, t) in self.quiet.items()}
        if self.pending_pos:
            data["p"] = self.pending_pos
        if self.recheck_pos:
            data["r"] = self.recheck_pos
        return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _split_done(entry: str) -> tuple[str, str]:
    fp, _, marker = entry.partition(".")
    return fp, marker


# -- one tick -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    partition: str
    fingerprint: str
    run_key: str
    reason: str  # "new" | "changed"
    objects: int


@dataclass
class TickPlan:
    launches: list[Launch]
    cursor: str
    messages: list[tuple[str, str]]  # (level, text): "info" | "warning"
    prefixes: int = 0
    invalid: int = 0
    probed: int = 0
    rechecked: int = 0
    waiting: int = 0  # not complete yet (or not examined this tick because of the budget)

    def summary(self) -> str:
        return (
            f"{self.prefixes} prefixes, {len(self.launches)} launched, {self.waiting} waiting, "
            f"{self.probed} examined, {self.rechecked} re-checked, {self.invalid} invalid names skipped"
        )


def _rotate(names: list[str], after: str) -> list[str]:
    """``names`` (sorted) starting just after ``after``, wrapping around."""
    lo, hi = 0, len(names)
    while lo < hi:
        mid = (lo + hi) // 2
        if names[mid] <= after:
            lo = mid + 1
        else:
            hi = mid
    return names[lo:] + names[:lo]


def plan_tick(
    store: Storage,
    cursor: str | None,
    settings: DiscoverySettings,
    now: float,
    is_valid_name: Callable[[str], bool] | None = None,
) -> TickPlan:
    """Evaluate one tick: which complete prefixes to launch, and the new cursor.

    Errors on one prefix are reported and skipped; an error of the top-level listing propagates (the
    tick fails and the cursor is left as it was).
    """
    state, warning = CursorState.loads(cursor)
    messages: list[tuple[str, str]] = [("warning", warning)] if warning else []
    plan = TickPlan([], "", messages)

    names: list[str] = []
    invalid: list[str] = []
    for p in store.list_prefixes(""):
        name = p[:-1] if p.endswith("/") else p
        if is_valid_name is not None and not is_valid_name(name):
            invalid.append(name)
        else:
            names.append(name)
    names.sort()  # code-point order of the bare names (a backend sorts "name/", which can differ)
    plan.prefixes, plan.invalid = len(names), len(invalid)
    if invalid:
        shown = ", ".join(repr(n) for n in invalid[:5]) + (" ..." if len(invalid) > 5 else "")
        messages.append(
            ("warning", f"skipped {len(invalid)} prefixes that cannot be partition names: {shown}")
        )

    present = set(names)
    for table in (state.done, state.changed, state.quiet):
        for gone in [k for k in table if k not in present]:
            del table[gone]

    launched_names = [n for n in names if n in state.done]
    pending = [n for n in names if n not in state.done]
    if settings.rerun_changed:
        # A launched prefix seen changed is pending again until it is complete again.
        pending = sorted(pending + [n for n in launched_names if n in state.changed])

    budget = settings.probes_per_tick
    finished = True
    for name in _rotate(pending, state.pending_pos):
        if budget <= 0 or len(plan.launches) >= settings.max_runs_per_tick:
            finished = False
            break
        budget -= 1
        plan.probed += 1
        state.pending_pos = name
        try:
            launch = _examine(store, name, state, settings, now, messages)
        except (StorageError, OSError) as exc:
            messages.append(("warning", f"{name}/: cannot be examined this tick ({exc})"))
            launch = None
        if launch is not None:
            plan.launches.append(launch)
    if finished:
        state.pending_pos = ""  # every pending prefix was examined: start from the first one next tick
    plan.waiting = len(pending) - len(plan.launches)

    # Change detection: a few launched prefixes per tick, in rotation. With re-runs on, a prefix already
    # seen changed is examined as pending above instead.
    launched_now = {x.partition for x in plan.launches}
    recheckable = [
        n
        for n in launched_names
        if n not in launched_now and not (settings.rerun_changed and n in state.changed)
    ]
    for name in _rotate(recheckable, state.recheck_pos)[: settings.rechecks_per_tick]:
        plan.rechecked += 1
        state.recheck_pos = name
        try:
            _recheck(store, name, state, settings, now, messages)
        except (StorageError, OSError) as exc:
            messages.append(("warning", f"{name}/: cannot be re-checked this tick ({exc})"))

    plan.cursor = state.dumps()
    return plan


def _examine(
    store: Storage,
    name: str,
    state: CursorState,
    settings: DiscoverySettings,
    now: float,
    messages: list[tuple[str, str]],
) -> Launch | None:
    """One pending prefix: launch it if it is complete, else remember what was seen."""
    prefix = f"{name}/"
    relaunch = name in state.done
    if not settings.quiet_mode and not relaunch:
        try:
            store.stat(prefix + settings.marker)  # cheap test before any deep listing
        except ObjectNotFoundError:
            return None
    listing = list_prefix(store, prefix, settings.marker)
    done_fp, done_marker = _split_done(state.done[name]) if relaunch else ("", "")
    if relaunch and listing.fingerprint == done_fp:
        state.changed.pop(name, None)  # changed back to what was launched
        state.quiet.pop(name, None)
        return None

    marker_ok = bool(listing.marker_tag) and (not relaunch or listing.marker_tag != done_marker)
    complete = marker_ok
    if not complete and settings.quiet_mode:
        complete = _quiet_enough(name, listing, state, settings, now)
    if not complete:
        if relaunch and not settings.quiet_mode and state.changed.get(name) != listing.fingerprint:
            messages.append(
                (
                    "info",
                    f"{name}/: changed since its last run; waiting for {settings.marker} to be rewritten",
                )
            )
        if relaunch:
            state.changed[name] = listing.fingerprint
        return None

    state.done[name] = f"{listing.fingerprint}.{listing.marker_tag}"
    state.changed.pop(name, None)
    state.quiet.pop(name, None)
    return Launch(
        partition=name,
        fingerprint=listing.fingerprint,
        run_key=run_key_for(name, listing.fingerprint),
        reason="changed" if relaunch else "new",
        objects=listing.objects,
    )


def _quiet_enough(
    name: str, listing: PrefixListing, state: CursorState, settings: DiscoverySettings, now: float
) -> bool:
    if listing.objects == 0:
        state.quiet.pop(name, None)
        return False
    seen = state.quiet.get(name)
    if seen is None or seen[0] != listing.fingerprint:
        state.quiet[name] = (listing.fingerprint, now)
        return False
    unchanged_for = now - seen[1]
    newest_age = now - listing.newest_mtime if listing.newest_mtime is not None else unchanged_for
    return unchanged_for >= settings.quiet_seconds and newest_age >= settings.quiet_seconds


def _recheck(
    store: Storage,
    name: str,
    state: CursorState,
    settings: DiscoverySettings,
    now: float,
    messages: list[tuple[str, str]],
) -> None:
    """A launched prefix: has its content changed since it was launched?"""
    listing = list_prefix(store, f"{name}/", settings.marker)
    done_fp, _ = _split_done(state.done[name])
    if listing.fingerprint == done_fp:
        state.changed.pop(name, None)
        return
    if state.changed.get(name) == listing.fingerprint:
        return  # already reported
    state.changed[name] = listing.fingerprint
    if settings.rerun_changed:
        messages.append(
            (
                "info",
                f"{name}/: changed since its last run ({listing.objects} objects); "
                "it is re-run once complete again",
            )
        )
        if settings.quiet_mode:
            state.quiet[name] = (listing.fingerprint, now)
    else:
        messages.append(
            (
                "warning",
                f"{name}/: changed since its last run ({listing.objects} objects now); not re-run "
                f"(set {ENV_RERUN_CHANGED}=1 to re-run changed prefixes, or launch distill_job for it)",
            )
        )


def launched_partitions(cursor: str | None) -> Iterable[str]:
    """Prefixes the cursor records as launched (for tools and tests)."""
    state, _ = CursorState.loads(cursor)
    return sorted(state.done)
