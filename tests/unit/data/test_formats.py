"""data/formats.py: readers of the real formats over small fixture files that follow them
exactly, and of policy-sampled pair files."""

import gzip
import json

import pytest

from rlaif_jax.data import formats, records
from rlaif_jax.labeling.labeler import human_label
from tests.unit.data._helpers import (
    COMP,
    HARMLESS,
    HELPFUL,
    HH_BAD,
    TLDR,
    TLDR_BAD,
    _write,
)


def _raw(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_tldr_sft_and_prompts():
    raw = _raw(TLDR)
    sft = list(formats.read_tldr(TLDR))
    assert len(sft) == len(raw) == 6
    assert set(sft[0]) == set(records.SFT_FEATURES)
    r = raw[1]
    assert sft[1] == {
        "id": r["id"],
        "context": f"SUBREDDIT: r/{r['subreddit']}\nTITLE: {r['title']}\nPOST: {r['post']}",
        "response": r["summary"],
    }
    prompts = list(formats.read_tldr(TLDR, role="prompts"))
    assert [set(p) for p in prompts] == [set(records.PROMPT_FEATURES)] * 6
    assert [p["context"] for p in prompts] == [s["context"] for s in sft]


def test_tldr_bad_records_name_file_line_field():
    with pytest.raises(formats.RecordError) as e:
        list(formats.read_tldr(TLDR_BAD))
    assert str(e.value) == f"{TLDR_BAD}, line 2, field 'summary': missing"
    stats = formats.ReadStats()
    good = list(formats.read_tldr(TLDR_BAD, skip_bad_records=True, stats=stats))
    assert [g["id"] for g in good] == ["t3_a1", "t3_d4"]
    assert (stats.read, stats.skipped) == (2, 3)
    assert "line 3, field 'post': empty text" in stats.errors[1]
    assert "line 4, field '<json>': not valid JSON" in stats.errors[2]
    # A prompt needs no summary, so line 2 is fine for prompts.
    with pytest.raises(formats.RecordError, match="line 3, field 'post'"):
        list(formats.read_tldr(TLDR_BAD, role="prompts"))


def test_comparisons_label_mapping_confidence_and_splits():
    raw = _raw(COMP)
    train = list(formats.read_comparisons(COMP, split="train"))
    assert len(train) == sum(r["split"] == "train" for r in raw) == 6
    assert set(train[0]) == set(records.PAIR_FEATURES)
    for rec, r in zip(train, [r for r in raw if r["split"] == "train"]):
        assert rec["response1"] == r["summaries"][0]["text"]
        assert rec["response2"] == r["summaries"][1]["text"]
        preferred = rec["response1"] if rec["label"] == 1.0 else rec["response2"]
        assert preferred == r["summaries"][r["choice"]]["text"]
        assert rec["confidence"] == r["extra"].get("confidence", 0)
        assert rec["context"].startswith(f"SUBREDDIT: r/{r['info']['subreddit']}\n")
    assert [r["label"] for r in train] == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert train[5]["confidence"] == 0  # extra has no confidence
    assert len({r["id"] for r in train}) == 6  # two comparisons of one post stay distinct
    assert len(list(formats.read_comparisons(COMP, split="valid1"))) == 1
    assert len(list(formats.read_comparisons(COMP))) == len(raw)


def test_comparisons_parquet_matches_jsonl(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = str(tmp_path / "comparisons.parquet")
    pq.write_table(pa.Table.from_pylist(_raw(COMP)), path)
    from_parquet = list(formats.read_comparisons(path, split="train"))
    from_json = list(formats.read_comparisons(COMP, split="train"))
    strip = [{k: v for k, v in r.items() if k != "id"} for r in from_json]
    assert [{k: v for k, v in r.items() if k != "id"} for r in from_parquet] == strip
    bad = _raw(COMP)
    bad[3]["choice"] = 2
    pq.write_table(pa.Table.from_pylist(bad), path)
    with pytest.raises(formats.RecordError, match=r"row 3, field 'choice': expected 0 or 1"):
        list(formats.read_comparisons(path))


def test_comparisons_bad_fields(tmp_path):
    raw = _raw(COMP)
    raw[1]["summaries"][1]["text"] = ""
    del raw[2]["info"]["post"]
    raw[4]["extra"]["confidence"] = 12
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in raw))
    with pytest.raises(formats.RecordError, match=r"line 2, field 'summaries.1.text': empty"):
        list(formats.read_comparisons(str(path)))
    stats = formats.ReadStats()
    assert len(list(formats.read_comparisons(str(path), skip_bad_records=True, stats=stats))) == 5
    assert stats.skipped == 3
    assert "line 3, field 'info.post': missing" in stats.errors[1]
    assert "line 5, field 'extra.confidence'" in stats.errors[2]


@pytest.mark.parametrize("path,subset", [(HELPFUL, "helpful"), (HARMLESS, "harmless")])
def test_hh_context_responses_and_orientation(path, subset):
    raw = _raw(path)
    pairs = list(formats.read_hh(path, subset))
    assert len(pairs) == len(raw)
    for rec, r in zip(pairs, raw):
        assert rec["context"].endswith("\n\nAssistant:")
        assert r["chosen"] == rec["context"] + " " + rec["response1"]
        assert r["rejected"] == rec["context"] + " " + rec["response2"]
        # chosen is preferred for both subsets: for harmless, the LESS harmful one.
        assert rec["label"] == 1.0 and rec["confidence"] == 0
    assert formats.HH_CHOSEN_MEANS[subset] in ("more helpful", "less harmful")
    multi = pairs[1] if subset == "helpful" else None
    if multi:  # multi-turn: context keeps every earlier turn
        assert multi["context"].count("\n\nAssistant:") == 2
        assert multi["response2"] == "Pancakes are round."


def test_hh_bad_records():
    with pytest.raises(formats.RecordError) as e:
        list(formats.read_hh(HH_BAD, "helpful"))
    assert f"{HH_BAD}, line 2, field 'rejected'" in str(e.value)
    assert "do not share the transcript" in str(e.value)
    stats = formats.ReadStats()
    assert len(list(formats.read_hh(HH_BAD, "helpful", skip_bad_records=True, stats=stats))) == 2
    assert stats.skipped == 2 and "line 3, field 'rejected': missing" in stats.errors[1]


def test_ai_preferences_manifest(tmp_path):
    rec = {
        "id": "x",
        "context": "c",
        "response1": "a",
        "response2": "b",
        "label": 0.7,
        "confidence": 0,
        "p_order1": 0.8,
        "p_order2": 0.6,
        "human_label": 1.0,
        "rationale": "",
    }
    (tmp_path / "shard-00000.jsonl").write_text(json.dumps(rec) + "\n")
    (tmp_path / "shard-00001.jsonl").write_text(json.dumps({**rec, "id": "y"}) + "\n")
    (tmp_path / "shard-00002.jsonl").write_text('{"id": "half-writ')  # unfinished shard
    assert list(formats.read_ai_preferences(str(tmp_path))) == []  # no manifest yet
    (tmp_path / "manifest.json").write_text(
        json.dumps({"shards": ["shard-00000.jsonl", {"file": "shard-00001.jsonl"}]})
    )
    out = list(formats.read_ai_preferences(str(tmp_path)))
    assert [r["id"] for r in out] == ["x", "y"] and out[0] == rec
    (tmp_path / "shard-00001.jsonl").write_text(json.dumps({**rec, "p_order2": "high"}) + "\n")
    with pytest.raises(formats.RecordError, match=r"shard-00001.jsonl, line 1, field 'p_order2'"):
        list(formats.read_ai_preferences(str(tmp_path)))


def test_missing_file_is_clear():
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(formats.read_tldr("/nonexistent/nope.jsonl"))


def test_read_policy_pairs_rated_unrated_and_bad_fields(tmp_path):
    base = {"id": "a", "context": "ctx", "response1": "r1", "response2": "r2"}
    rated = _write(tmp_path / "rated.jsonl", [{**base, "label": 1, "confidence": 2}])
    assert list(formats.read_policy_pairs(rated)) == [{**base, "label": 1.0, "confidence": 2}]
    unrated = _write(tmp_path / "unrated.jsonl", [base])
    (rec,) = formats.read_policy_pairs(unrated)
    assert rec == {**base, "label": -1.0, "confidence": 0}
    assert human_label(rec) == -1.0  # no human label: left out of alignment metrics
    bad = _write(tmp_path / "bad.jsonl", [base, {**base, "label": 2.0, "confidence": 1}])
    with pytest.raises(formats.RecordError, match=r"bad.jsonl, line 2, field 'label'"):
        list(formats.read_policy_pairs(bad))
    no_text = _write(tmp_path / "no_text.jsonl", [{**base, "context": " "}])
    with pytest.raises(formats.RecordError, match="field 'context': empty text"):
        list(formats.read_policy_pairs(no_text))
