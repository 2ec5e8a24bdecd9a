"""The writer lease of a store on an object store, where ``flock`` cannot exist.

A lease is one JSON object, ``.kdcache-writer.lease`` next to the store's
``zarr.json``: ``{"owner", "host", "pid", "started", "expires", "released"}``.
Every change to it is a conditional write, so two writers can never both
believe they hold it:

* **take**: create it only if absent (``If-None-Match: *``); if it exists and
  is expired or released, replace it only if it is still the version read
  (``If-Match: <etag>``): of two writers taking over at once, one wins;
* **renew**: a background thread rewrites it every ``ttl / 3`` seconds with
  ``If-Match`` on the etag this writer last wrote; a refused renewal means
  another writer took it (after it expired), and :meth:`Lease.check` then
  stops every further write of this process;
* **release**: marked released with ``If-Match`` (never deleted blindly, which
  could remove a lease another writer just took).

:meth:`Lease.check` also refuses once the lease is within a safety margin of
its expiry (a renewal thread starved of CPU), so this process never writes
after another writer could have taken over. A killed writer's lease expires
after ``ttl`` seconds; then the same command takes it over and resumes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from kdcache.errors import StoreBusyError, StoreError
from kdcache.store.layout import LEASE_NAME
from kdcache.store.location import Location
DEFAULT_TTL = 60.0
# Stop writing this long before the lease expires, whatever the renewal thread managed.
SAFETY = 0.25
# Leases held by this process, by store URL: a Store opened for writing there checks it before each write.
_HELD: dict[str, Lease] = {}


class LeaseLostError(StoreError):
    """This writer's lease was taken by another writer (or is about to expire): it stopped writing."""


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).replace(microsecond=0).isoformat()


class Lease:
    """An exclusive, expiring writer lease on ``location`` (see the module docstring)."""

    def __init__(self, location: Location, ttl: float = DEFAULT_TTL) -> None:
        if ttl <= 0:
            raise StoreError(f"a lease needs a positive duration (got {ttl})")
        self.location = location
        self.ttl = float(ttl)
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self.expires = 0.0
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ taking
    def _body(self, now: float, released: bool = False) -> bytes:
        return json.dumps({
            "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "started": _iso(self._started),
            "expires": now if released else now + self.ttl, "expires_utc": _iso(now if released else now + self.ttl),
            "released": released,
        }).encode()

    def _put(self, body: bytes, mode: Any) -> str | None:
        import obstore

        return obstore.put(self.location.objects(), LEASE_NAME, body, mode=mode)["e_tag"]

    def acquire(self) -> None:
        """Take the lease or raise :class:`StoreBusyError` naming its holder and when it expires."""
        self.location.objects()  # a bad option, or obstore not installed, is its own one line
        from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

        self._started = time.time()
        now = time.time()
        try:
            self.etag = self._put(self._body(now), "create")
        except (AlreadyExistsError, PreconditionError):
            try:
                self._take_over()
            except (AlreadyExistsError, PreconditionError):  # another writer created or took it meanwhile
                again = self.location.read(LEASE_NAME)
                raise StoreBusyError(_busy_line(self.location, _parse(again[0]) if again else {})) from None
            except BaseError as exc:
                raise self.location.unreachable(exc) from None
        except BaseError as exc:
            raise self.location.unreachable(exc) from None
        self.expires = now + self.ttl
        _HELD[self.location.url] = self
        self._thread = threading.Thread(target=self._renew_loop, name="kdcache-lease", daemon=True)
        self._thread.start()

    def _take_over(self) -> None:
        """Replace an expired or released lease, only if it is still the version read."""
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        current = self.location.read(LEASE_NAME)
        if current is None:  # released and removed meanwhile: create it again
            self.etag = self._put(self._body(time.time()), "create")
            return
        raw, etag = current
        holder = _parse(raw)
        if not holder.get("released") and float(holder.get("expires", 0)) > time.time():
            raise StoreBusyError(_busy_line(self.location, holder))
        try:
            self.etag = self._put(self._body(time.time()), {"e_tag": etag})
        except (AlreadyExistsError, PreconditionError):
            again = self.location.read(LEASE_NAME)
            raise StoreBusyError(_busy_line(self.location, _parse(again[0]) if again else holder)) from None

    # ------------------------------------------------------------------ holding
    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Extend the lease (``If-Match`` on our etag); False, and the lease marked lost, when refused."""
        with self._lock:
            if self.lost is not None or self.etag is None:
                return False
            now = time.time()
            try:
                self.etag = self._put(self._body(now), {"e_tag": self.etag})
                self.expires = now + self.ttl
                return True
            except Exception as exc:  # noqa: BLE001 - any failure to renew means we may not write on
                try:
                    current = self.location.read(LEASE_NAME) if _precondition(exc) else None
                except StoreError:  # unreachable now: say who holds it when we can, stop either way
                    current = None
                holder = _parse(current[0]) if current else {}
                who = f"{holder.get('owner', 'another writer')[:12]} on {holder.get('host', '?')} " \
                      f"(pid {holder.get('pid', '?')})" if holder else "another writer"
                self.lost = (f"lost the writer lease on {self.location} to {who}" if _precondition(exc)
                             else f"could not renew the writer lease on {self.location} ({type(exc).__name__})")
                return False

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when this process may no longer write (lost, or about to expire)."""
        if self.lost is None and time.time() > self.expires - SAFETY * self.ttl:
            self.lost = f"the writer lease on {self.location} was not renewed in time"
        if self.lost is not None:
            raise LeaseLostError(
                f"{self.lost}; stopped writing (chunks whose record was written are kept): "
                "run the same command again once the other writer has finished"
            )

    def release(self) -> None:
        """Stop renewing and mark the lease released (``If-Match``: never another writer's lease)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        _HELD.pop(self.location.url, None)
        with self._lock:
            if self.lost is None and self.etag is not None:
                try:
                    self._put(self._body(time.time(), released=True), {"e_tag": self.etag})
                except Exception:  # noqa: BLE001 - it expires by itself; releasing early is a courtesy
                    pass
            self.etag = None

    def discard(self) -> None:
        """Stop renewing and delete the lease object while it is still ours, where it protects nothing (no
        store was begun): deleted before it could be taken over, since a released lease can be at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        _HELD.pop(self.location.url, None)
        with self._lock:
            if self.lost is None and self.etag is not None and time.time() < self.expires - SAFETY * self.ttl:
                import obstore

                try:
                    obstore.delete(self.location.objects(), LEASE_NAME)
                    self.etag = None  # nothing left to release
                except Exception:  # noqa: BLE001 - release() marks it released instead; it expires anyway
                    pass

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held(location: Location) -> Lease | None:
    """The lease this process holds on ``location``, if any."""
    return _HELD.get(location.url)


def _precondition(exc: BaseException) -> bool:
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    return isinstance(exc, (PreconditionError, AlreadyExistsError))


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _busy_line(location: Location, holder: dict[str, Any]) -> str:
    return (
        f"{location} is being written by another process: lease of {str(holder.get('owner', '?'))[:12]} on "
        f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}), started {holder.get('started', '?')}, "
        f"expires {holder.get('expires_utc', '?')}; wait for it to finish (or, if it was killed, for the "
        "lease to expire), then run again"
    )
