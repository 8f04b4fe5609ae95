"""evaluate: detections in the warehouse, scored as COCOeval scores them.

``detections`` (results files → the ``predictions`` table), ``metrics`` (matching,
accumulation, the summary stats, the match table). Imports the core, ``ingest`` and
``query``.
"""

from .metrics import IOU_TYPES, STAT_NAMES, Evaluation, evaluate, match_tables, pr_curves, save_matches

__all__ = ["IOU_TYPES", "STAT_NAMES", "Evaluation", "evaluate", "match_tables", "pr_curves", "save_matches"]
