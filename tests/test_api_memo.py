"""The service's in-process memos: bounded LRU, validation outcomes, head outputs."""

from __future__ import annotations

import numpy as np

from app.api.memo import CanonicalMemo, LRUMemo, PredictionMemo, ResponseMemo
from models.chemistry import ParsePolicy


def test_lru_memo_evicts_least_recently_used():
    memo: LRUMemo[str, int] = LRUMemo(2)
    memo.put_many([("a", 1), ("b", 2)])
    assert memo.get_many(["a"]) == [1]  # "a" is now the most recent
    memo.put_many([("c", 3)])
    assert memo.get_many(["a", "b", "c"]) == [1, None, 3]
    off: LRUMemo[str, int] = LRUMemo(0)
    off.put_many([("a", 1)])
    assert off.get_many(["a"]) == [None] and len(off) == 0


def test_canonical_memo_matches_rdkit_and_recalls_only_known_inputs():
    memo = CanonicalMemo(ParsePolicy(max_smiles_length=20))
    assert memo.recall(["OCC"]) is None
    canonical, errors = memo(["OCC", "C(", "C" * 30])
    assert canonical == ["CCO", None, None]
    assert errors[0] is None and "unparsable" in errors[1] and "too long" in errors[2]
    assert memo.recall(["OCC", "C("]) == (["CCO", None], [None, errors[1]])
    assert memo.recall(["C" * 30]) is None  # over-long inputs are not kept


def test_prediction_memo_is_keyed_by_head_version():
    memo = PredictionMemo(10)
    memo.store("esol", "v1", ["CCO"], np.array([[1.5]]))
    assert memo.lookup("esol", "v1", ["CCO"])[0].tolist() == [1.5]
    assert memo.lookup("esol", "v2", ["CCO"]) == [None]  # a retrained head never reads old outputs
    assert memo.lookup("bbbp", "v1", ["CCO"]) == [None]
    memo.store("esol", "v1", ["CCN", "CCC"], np.array([[np.nan], [2.0]]))  # a failed row is not kept
    assert memo.lookup("esol", "v1", ["CCN"]) == [None] and memo.lookup("esol", "v1", ["CCC"])[0] == [2.0]


def test_response_memo_answers_all_or_nothing_per_versions_key():
    memo = ResponseMemo(100)
    memo.store("bbbp@v1", 1, [("CCO", b'{"a":1}', True), ("C(", b'{"b":2}', False)])
    assert memo.recall("bbbp@v1", ["C(", "CCO", "CCO"]) == ([b'{"b":2}', b'{"a":1}', b'{"a":1}'], 2)
    assert memo.recall("bbbp@v1", ["CCO", "OCC"]) is None  # one unknown input: no answer at all
    assert memo.recall("bbbp@v2", ["CCO"]) is None  # a retrained head never reads old items
    assert memo.recall("bbbp@v1|esol@v1", ["CCO"]) is None  # nor another property set


def test_response_memo_is_bounded_by_head_outputs_held():
    memo = ResponseMemo(10)
    memo.store("k", 4, [("a", b"1", True), ("b", b"2", True)])  # 8 of 10
    assert memo.recall("k", ["a"]) is not None  # "a" is now the most recent
    memo.store("k", 4, [("c", b"3", True)])  # 12 > 10: evicts "b", the least recently used
    assert memo.recall("k", ["b"]) is None
    assert memo.recall("k", ["a", "c"]) == ([b"1", b"3"], 2)
    memo.store("k", 4, [("c", b"3", True)])  # re-storing does not count twice
    assert len(memo) == 2
    memo.store("big", 11, [("a", b"x", True)])  # heavier than the whole memo: not kept
    assert memo.recall("big", ["a"]) is None
    off = ResponseMemo(0)
    off.store("k", 1, [("a", b"1", True)])
    assert len(off) == 0
