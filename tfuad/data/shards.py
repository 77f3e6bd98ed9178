"""Split a cohort into N shards for array jobs: deterministic, no overlap, no gap.

Shard ``K`` of ``N`` (``K`` counts from 0, as ``$SLURM_ARRAY_TASK_ID`` with
``--array=0-9`` and Kubernetes' ``JOB_COMPLETION_INDEX`` do) holds the subjects at
positions ``K, K + N, K + 2N, ...`` of the sorted subject ids. It depends on the
set of ids only, never on the order the inputs were given in, so every array
task computes the same split; shards differ in size by at most one subject.
Every task must be given the same cohort (the same inputs): the split is of that
whole cohort.

Example:
    >>> parse_shard("1/3")
    (1, 3)
    >>> shard_ids(["s5", "s1", "s4", "s2", "s3"], 1, 3)
    ['s2', 's5']
"""
from __future__ import annotations

from tfuad.errors import ConfigError

__all__ = ["parse_shard", "shard_ids", "shard_items", "shard_label"]


def parse_shard(text) -> tuple[int, int]:
    """``(K, N)`` from ``"K/N"`` with ``0 <= K < N``.

    Raises:
        ConfigError: not of the form ``K/N``, ``N < 1`` or ``K`` outside ``0 .. N-1``.

    Example:
        >>> parse_shard("0/10")
        (0, 10)
    """
    parts = str(text).strip().split("/")
    try:
        k, n = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--shard {text!r} is not K/N (e.g. 0/10: the first of 10 shards, "
                          "K counting from 0)") from None
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"--shard {text!r}: K must be 0 to N-1 and N at least 1 (K counts from 0, "
                          "as SLURM_ARRAY_TASK_ID with --array=0-(N-1))")
    return k, n


def shard_label(k: int, n: int) -> str:
    """The name of shard ``K`` of ``N`` in file names.

    Example:
        >>> shard_label(3, 10)
        'shard-03-of-10'
    """
    width = len(str(n - 1))
    return f"shard-{k:0{width}d}-of-{n}"


def shard_ids(ids, k: int, n: int) -> list[str]:
    """The ids of shard ``k`` of ``n``: every ``n``-th of the sorted unique ids, from position ``k``.

    Raises:
        ConfigError: ``k`` or ``n`` out of range, or an id listed twice.
    """
    parse_shard(f"{k}/{n}")
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"cannot shard a cohort listing subject ids twice: {', '.join(repeated[:5])}")
    return sorted(ids)[k::n]


def shard_items(items, k: int, n: int, key=lambda item: item.subject) -> list:
    """The items of shard ``k`` of ``n``, in their given order; ``key`` gives an item's subject id."""
    chosen = set(shard_ids([key(item) for item in items], k, n))
    return [item for item in items if key(item) in chosen]
