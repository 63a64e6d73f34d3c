"""Re-exports for tests/integration/test_label_stage.py, which imports these from
`tests.unit.test_labeler`; the labeler's tests are tests/unit/labeling/test_labeler.py.
Remove once that file imports `tests.unit.labeling._helpers`."""

from tests.unit.labeling._helpers import CharVocab, RiggedScorer, pairs

__all__ = ["CharVocab", "RiggedScorer", "pairs"]
