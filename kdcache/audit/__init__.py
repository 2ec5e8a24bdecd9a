"""``kdcache info`` (what is in a store) and ``kdcache verify`` (is it intact, does it replay)."""

from kdcache.audit.info import format_info, store_info
from kdcache.audit.verify import ReplayResult, VerifyReport, format_verify, replay_audit, verify_store

__all__ = ["ReplayResult", "VerifyReport", "format_info", "format_verify", "replay_audit", "store_info",
           "verify_store"]
