"""data/tasks.py: sources per role from the gin task files, seqio Tasks with per-host
shards, the TFDS adapter, and policy-sampled pairs in the label / reward stages' view of
the sources (`PolicyPairs`, as gin binds it through `rlaif_jax.configurables`)."""

import pytest

from rlaif_jax import configurables, gin_utils
from rlaif_jax.data import formats, records, splits, tasks
from rlaif_jax.toy import text as toy_text
from rlaif_jax.toy.world import ToyWorld
from tests.unit.data._helpers import COMP, HARMLESS, HELPFUL, TLDR, _write


def _summarize_from_gin() -> tasks.TaskSources:
    gin_utils.parse_gin(
        ["tasks/summarize.gin"],
        [
            f"TLDR_TRAIN = '{TLDR}'",
            f"TLDR_VALIDATION = '{TLDR}'",
            f"TLDR_TEST = '{TLDR}'",
            f"COMPARISONS = ['{COMP}']",
            "DATA_SEED = 5",
        ],
    )
    return configurables.build_data()


def test_summarize_gin_sources_per_role():
    data = _summarize_from_gin()
    assert data.task == "summarize"
    sft = list(data.source("sft", "train"))
    assert sft == list(formats.read_tldr(TLDR))
    assert list(data.source("prompts", "test")) == list(formats.read_tldr(TLDR, role="prompts"))
    human = list(data.source("human_prefs", "train"))
    assert human == list(formats.read_comparisons(COMP, split="train"))
    assert list(data.source("unlabeled", "train")) == list(splits.randomize_order(human, 5))
    assert len(list(data.source("human_prefs", "test"))) == 1  # the file's valid2
    align = list(data.source("alignment", "train"))
    assert all(r["confidence"] in (1, 2, 8, 9) for r in align)
    assert list(data.source("alignment", "train")) == align  # re-iterable, deterministic
    for role, by_split in data.sources.items():
        for src in by_split.values():
            assert all(set(r) == set(records.__dict__[_feat(role)]) for r in src)
    with pytest.raises(KeyError, match="no 'ai_prefs' data for split 'train'"):
        data.source("ai_prefs", "train")


def _feat(role):
    return {
        "sft": "SFT_FEATURES",
        "prompts": "PROMPT_FEATURES",
        "ai_prefs": "AI_PREFERENCE_FEATURES",
    }.get(role, "PAIR_FEATURES")


def test_required_macro_reported_with_file():
    with pytest.raises(gin_utils.GinUsageError) as e:
        gin_utils.parse_gin(["tasks/helpful.gin"], [f"HH_HELPFUL_TRAIN = '{HELPFUL}'"])
    assert "HH_HELPFUL_TEST" in str(e.value) and "tasks/helpful.gin" in str(e.value)


@pytest.mark.parametrize("subset,path", [("helpful", HELPFUL), ("harmless", HARMLESS)])
def test_hh_gin_sources(subset, path):
    up = subset.upper()
    gin_utils.parse_gin(
        [f"tasks/{subset}.gin"], [f"HH_{up}_TRAIN = '{path}'", f"HH_{up}_TEST = '{path}'"]
    )
    data = configurables.build_data()
    human = list(data.source("human_prefs", "train"))
    assert human == list(formats.read_hh(path, subset))
    assert all(r["label"] == 1.0 for r in human)  # chosen first: for harmless, less harmful
    val, test = list(data.source("human_prefs", "validation")), list(data.source("sft", "test"))
    assert len(val) + len(test) == len(human)
    assert [r["response"] for r in data.source("sft", "train")] == [r["response1"] for r in human]
    assert [r["context"] for r in data.source("prompts", "train")] == [r["context"] for r in human]


def test_seqio_tasks_match_plain_python_and_shard(tmp_path):
    data = _summarize_from_gin()
    (tmp_path / "manifest.json").write_text('{"shards": []}')
    data = data.with_ai_labels(str(tmp_path))
    names = tasks.register_tasks(data)
    assert "rlaif_summarize_sft" in names and "rlaif_summarize_unlabeled" in names
    assert tasks.register_tasks(data) == names  # re-registering replaces
    for role, split in [("sft", "train"), ("unlabeled", "train"), ("human_prefs", "validation")]:
        expected = list(data.source(role, split))
        got = list(tasks.task_records(tasks.task_name("summarize", role), split))
        assert got == [{k: r[k] for k in records.__dict__[_feat(role)]} for r in expected]
        for n in (2, 3):
            parts = [
                list(tasks.task_records(tasks.task_name("summarize", role), split, i, n))
                for i in range(n)
            ]
            assert parts == [list(tasks.iterate_records(expected, i, n)) for i in range(n)]
    assert list(tasks.task_records("rlaif_summarize_ai_prefs", "train")) == []


def test_tfds_adapter(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class RlaifTinyHh(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        # No checksums file to look up next to this test (that lookup needs the
        # optional importlib_resources package for modules inside a package).
        code_path = None

        def _info(self):
            text = tfds.features.Text()
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {"prompt": text, "chosen": text, "rejected": text}
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(3):
                yield i, {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}

    try:
        RlaifTinyHh(data_dir=str(tmp_path)).download_and_prepare()
    except Exception as e:  # noqa: BLE001 - any offline build failure is a skip reason
        pytest.skip(f"cannot build a local TFDS dataset offline: {e}")
    recs = list(
        formats.read_tfds(
            "rlaif_tiny_hh",
            "train",
            {"context": "prompt", "response1": "chosen", "response2": "rejected"},
            data_dir=str(tmp_path),
            constants={"label": 1.0, "confidence": 0},
        )
    )
    assert sorted(r["context"] for r in recs) == ["q0", "q1", "q2"]
    r = next(r for r in recs if r["context"] == "q1")
    assert (r["response1"], r["response2"], r["label"]) == ("good 1", "bad 1", 1.0)
    assert set(r) == set(records.PAIR_FEATURES)


def _stage_view(workdir) -> tasks.TaskSources:
    """What the label and reward stages read: the task's data with the gin PolicyPairs."""
    return configurables.build_policy_pairs().apply(configurables.build_data(), str(workdir))


def _toy_sources_with_pairs(tmp_path, rows, **bindings):
    gin_utils.parse_gin(
        ["tasks/toy.gin"],
        ["ToyWorldConfig.num_pairs = 40", "ToyWorldConfig.num_heldout_pairs = 10"]
        + [f"PolicyPairs.{k} = {v!r}" for k, v in bindings.items()],
    )
    (tmp_path / "policy_pairs").mkdir(exist_ok=True)
    _write(tmp_path / "policy_pairs" / "train.jsonl", rows)
    return _stage_view(tmp_path)


def _policy_rows(n, rated):
    world = ToyWorld()
    rows = []
    for i in range(n):
        post = world.post("pairs-train", i)
        row = {
            "id": f"toy-pairs-train-{i}",
            "context": post.context,
            "response1": toy_text.render_summary(post.key_facts),
            "response2": toy_text.render_summary(post.facts),
        }
        if rated:
            row.update(label=1.0 if i % 3 else 0.0, confidence=(1, 2, 5, 8, 9)[i % 5])
        rows.append(row)
    return rows


def test_stage_view_without_policy_pairs_is_the_task_sources(tmp_path):
    gin_utils.parse_gin(["tasks/toy.gin"], ["ToyWorldConfig.num_pairs = 40"])
    data = _stage_view(tmp_path)
    assert list(data.source("unlabeled", "train")) == list(
        configurables.build_data().source("unlabeled", "train")
    )


def test_rated_policy_pairs_replace_unlabeled_human_prefs_and_alignment(tmp_path):
    rows = _policy_rows(30, rated=True)
    data = _toy_sources_with_pairs(
        tmp_path, rows, pairs_dir="policy_pairs", alignment_fraction=0.5, max_alignment=5
    )
    want = list(formats.read_policy_pairs(str(tmp_path / "policy_pairs" / "train.jsonl")))
    assert list(data.source("unlabeled", "train")) == want
    assert list(data.source("human_prefs", "train")) == want
    alignment = list(data.source("alignment", "train"))
    assert alignment == list(splits.alignment_subset(want, "summarize", 0, 0.5))[:5]
    assert alignment and all(r["confidence"] in splits.HIGH_CONFIDENCE for r in alignment)
    # Held-out human preferences stay the task's own validation pairs.
    assert list(data.source("human_prefs", "validation")) == list(
        configurables.build_data().source("human_prefs", "validation")
    )


def test_unrated_policy_pairs_replace_only_the_unlabeled_pairs(tmp_path):
    data = _toy_sources_with_pairs(tmp_path, _policy_rows(6, rated=False), pairs_dir="policy_pairs")
    assert [r["confidence"] for r in data.source("unlabeled", "train")] == [0] * 6
    original = configurables.build_data()
    assert list(data.source("human_prefs", "train")) == list(
        original.source("human_prefs", "train")
    )
    assert list(data.source("alignment", "train")) == list(original.source("alignment", "train"))


def test_missing_policy_pairs_name_the_stage_to_run(tmp_path):
    gin_utils.parse_gin(["tasks/toy.gin"], ["PolicyPairs.pairs_dir = 'policy_pairs'"])
    with pytest.raises(FileNotFoundError, match="policy_pairs/train.jsonl"):
        _stage_view(tmp_path)


def test_stage_without_data_says_where_to_get_it():
    with pytest.raises(ValueError, match="sft reads the task's data.*task_sources"):
        tasks.need_data(None, "sft")


@pytest.mark.parametrize("rated", [True, False])
def test_policy_pairs_without_alignment_have_no_alignment_subset(tmp_path, rated):
    rows = _policy_rows(12, rated=rated)
    data = _toy_sources_with_pairs(tmp_path, rows, pairs_dir="policy_pairs", alignment=False)
    want = list(formats.read_policy_pairs(str(tmp_path / "policy_pairs" / "train.jsonl")))
    assert list(data.source("unlabeled", "train")) == want
    assert data.sources["alignment"] == {}  # the label stage labels the pairs only
