"""Progress of the long commands: a tqdm bar per phase on a terminal, else a few log lines."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def make_progress(disabled: bool, unit: str = "task", lines: int = 4):
    """A ``progress(phase, done, total)`` callback: bars on a terminal unless ``disabled``,
    otherwise about ``lines`` log lines per phase (``phase: done/total units``)."""
    if not disabled and sys.stderr.isatty():
        from tqdm import tqdm

        bars: dict = {}

        def show(phase, done, total):
            bar = bars.get(phase)
            if bar is None:
                bar = bars[phase] = tqdm(total=total, desc=phase, unit=unit, leave=False)
            bar.n = done
            bar.refresh()
            if done >= total:
                bar.close()

        return show
    last: dict = {}

    def log_lines(phase, done, total):
        step = max(1, total // lines)
        if done == total or done - last.get(phase, -step) >= step:
            last[phase] = done
            log.info("%s: %d/%d %ss", phase, done, total, unit)

    return log_lines
