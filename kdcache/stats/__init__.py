"""``kdcache stats`` and the statistic providers it computes (see :mod:`kdcache.stats.registry`)."""

from kdcache.stats.compute import DEFAULT_GRID, StatsResult, compute_stats, format_stats
from kdcache.stats.registry import StatProvider, StatsOptions, for_loss_arg, providers, register

__all__ = ["DEFAULT_GRID", "StatProvider", "StatsOptions", "StatsResult", "compute_stats", "for_loss_arg",
           "format_stats", "providers", "register"]
