"""evaluate: detections in the warehouse, scored as COCOeval scores them.

``detections`` (results files → the ``predictions`` table), ``load`` (ground truths and
detections from the views), ``matching`` (IoU, ranking, greedy matching), ``metrics``
(accumulation, the summary stats), ``store`` (the match table), ``lvis`` (LVIS's rules).
Imports the core, ``ingest`` and ``query``.
"""

from .metrics import IOU_TYPES, STAT_NAMES, Evaluation, evaluate, pr_curves
from .store import match_tables, save_matches

__all__ = ["IOU_TYPES", "STAT_NAMES", "Evaluation", "evaluate", "match_tables", "pr_curves", "save_matches"]
