"""Progress bars that lines logged meanwhile do not break.

A line logged while a ``tqdm`` bar is drawn on the same terminal lands in the
middle of the bar (``evaluating:  12%|█▎ | 1/8 [00:01<00:13]sub-test001 ...``).
:func:`progress` clears the bar, writes the line, and redraws the bar. The bar is
drawn only on a terminal: output sent to a file or a pipe holds the lines alone.

Example:
    >>> with progress(3, desc="volumes", unit="volume", log=print, disable=True) as (bar, say):
    ...     for name in "abc":
    ...         say(f"{name}: done")
    ...         bar.update()
    a: done
    b: done
    c: done
"""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["progress"]


@contextmanager
def progress(total: int, *, desc: str, unit: str, log=print, disable: bool = False):
    """A ``tqdm`` bar and a ``say(text)`` that logs through ``log`` without breaking the bar.

    Args:
        total: Number of items.
        desc, unit: The bar's label and unit.
        log: Where lines go (e.g. ``print`` or ``click.echo``).
        disable: No bar (lines still go to ``log``); without it, a bar only on a terminal.

    Yields:
        ``(bar, say)``; call ``bar.update()`` after each item.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=True if disable else None)  # None: terminals only

    def say(text: str) -> None:
        with tqdm.external_write_mode():
            log(text)

    try:
        yield bar, say
    finally:
        bar.close()
