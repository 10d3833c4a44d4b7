"""Scoring: the metric table (:mod:`.keys`), MD and single-point scores (:mod:`.core`), scoring a
run folder or trajectory against its reference (:mod:`.run`) and the scorecard (:mod:`.card`)."""

from dynamat.scoring.core import MD_KEYS, score_md, score_singlepoint
from dynamat.scoring.keys import ERROR_KEYS, METRIC_KEYS, METRICS

__all__ = ["ERROR_KEYS", "MD_KEYS", "METRICS", "METRIC_KEYS", "score_md", "score_singlepoint"]
