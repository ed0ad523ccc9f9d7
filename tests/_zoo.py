"""The zoo models the zoo-wide tests run on: every registered name except the deepest members of a family whose
smaller member exercises the same blocks (their counts are checked in their own test file), to keep CI fast."""

from prunekit.models import list_models

HEAVY = {"condensenet122": "condensenet50 has the same blocks; counts in test_condensenet.py",
         "condensenet182": "condensenet50 has the same blocks; counts in test_condensenet.py"}
ZOO = [n for n in list_models() if n not in HEAVY]
