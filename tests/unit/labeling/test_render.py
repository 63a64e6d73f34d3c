"""labeling/render.py: the exact structure of every prompt variant (the texts of
labeling/prompts.py), gin variants, exemplar files, d-RLAIF and harmless-rate prompts."""

from __future__ import annotations

import gin
import pytest

from rlaif_jax.labeling import prompts as P
from rlaif_jax.labeling import render

CTX, R1, R2 = "CONTEXT TEXT", "FIRST RESPONSE", "SECOND RESPONSE"


def test_summarize_base_zero_shot_exact():
    r = render.render_preference(render.PromptVariant("summarize", "base"), CTX, R1, R2)
    assert r.prefix == (
        "You are an expert summary rater. Given a piece of text and two of its possible "
        "summaries, output 1 or 2 to indicate which summary is better.\n"
    )
    assert r.suffix == f"Text - {CTX}\nSummary 1 - {R1}\nSummary 2 - {R2}\nPreferred Summary="
    assert r.text == r.prefix + r.suffix


def test_harmless_two_shot_exact_and_inverted():
    v = render.PromptVariant("harmless", "base", num_shots=2)
    ex = render.load_exemplars(P.EXEMPLAR_FILES["harmless"])
    r = render.render_preference(v, CTX, R1, R2)
    blocks = [
        f"»»»» Example »»»»\nContext - {e.context}\nResponse 1 - {e.response1}\n"
        f"Response 2 - {e.response2}\nPreferred Response={e.label}"
        for e in ex[:2]
    ]
    assert (
        r.prefix
        == "\n".join(
            [P.HARMLESS_BASE, *blocks, "»»»» Follow the instructions and the example(s) above »»»»"]
        )
        + "\n"
    )
    assert r.suffix == f"Context - {CTX}\nResponse 1 - {R1}\nResponse 2 - {R2}\nPreferred Response="
    # The paper's harmless exemplars answer "which is MORE harmful": =2 then =1.
    assert [e.label for e in ex[:2]] == [2, 1]
    assert "most harmful" in P.HARMLESS_BASE and v.inverts_labels
    assert not render.PromptVariant("helpful").inverts_labels


def test_detailed_cot_zero_shot_two_steps():
    v = render.PromptVariant("summarize", "detailed", cot=True)
    step1 = render.render_preference(v, CTX, R1, R2)
    assert step1.prefix == P.SUMMARIZE_DETAILED_COT + "\n"
    assert "explain which summary best adheres" in step1.prefix
    assert step1.suffix.endswith(
        "Consider the coherence, accuracy, coverage, and overall quality of each summary and "
        "explain which one is better.\nRationale:"
    )
    step2 = render.render_preference(v, CTX, R1, R2, rationale="  Summary 1 is better. ")
    assert step2.suffix == step1.suffix + " Summary 1 is better.\nPreferred Summary="
    plain = render.render_preference(render.PromptVariant("summarize", "detailed"), CTX, R1, R2)
    assert plain.prefix == P.SUMMARIZE_DETAILED + "\n"
    for axis in ("Coherence:", "Accuracy:", "Coverage:", "Overall quality:"):
        assert axis in plain.prefix
    assert plain.prefix.rstrip().endswith(
        "output 1 or 2 to indicate which summary best adheres "
        "to coherence, accuracy, coverage, and overall quality "
        "as defined above."
    )


@pytest.mark.parametrize("task", P.TASKS)
def test_every_variant_structure(task):
    sample_head = "Text - " if task == "summarize" else "Context - "
    name = "Summary" if task == "summarize" else "Response"
    variants = render.variants_for_task(task, shots=(0, 1, 2))
    assert len(variants) >= 6
    for v in variants:
        r = render.render_preference(v, CTX, R1, R2)
        # Prefix: preamble first; one header per shot; each exemplar ends with its label;
        # footer closes the block iff there are shots; the prefix ends at the separator.
        assert r.prefix.startswith(v.preamble_string + "\n"), v
        assert r.prefix.endswith("\n")
        assert r.prefix.count(P.EXAMPLE_HEADER) == v.num_shots
        assert (P.EXAMPLES_FOOTER in r.prefix) == (v.num_shots > 0)
        if v.num_shots:
            assert r.prefix.endswith(P.EXAMPLES_FOOTER + "\n")
            for block in r.prefix.split(P.EXAMPLE_HEADER)[1:]:
                lines = block.strip("\n").split("\n")
                assert any(x.startswith(sample_head) for x in lines)
                label_line = [x for x in lines if x.startswith(v.ending_string)]
                assert len(label_line) == 1 and label_line[0][-1] in "12"
                if v.cot:
                    assert any(x.startswith("Rationale: ") for x in lines)
        # Suffix: sample in order, then the ending (or the CoT cue).
        lines = r.suffix.split("\n")
        assert lines[0] == sample_head + CTX
        i1 = lines.index(f"{name} 1 - {R1}")
        i2 = lines.index(f"{name} 2 - {R2}")
        assert 0 < i1 < i2
        assert lines[-1] == ("Rationale:" if v.cot else f"Preferred {name}=")
        # Swapping the pair swaps only the shown responses.
        s = render.render_preference(v, CTX, R2, R1)
        assert s.prefix == r.prefix and f"{name} 1 - {R2}" in s.suffix


def test_eight_shot_and_too_many_shots():
    v = render.PromptVariant("summarize", "detailed", num_shots=8)
    assert render.shared_prefix(v).count(P.EXAMPLE_HEADER) == 8
    with pytest.raises(ValueError, match="holds only 2 exemplars"):
        render.shared_prefix(render.PromptVariant("helpful", num_shots=3))


def test_unknown_preamble_and_task_errors():
    with pytest.raises(ValueError, match="preamble_text"):
        render.PromptVariant("helpful", "openai")
    with pytest.raises(ValueError, match="custom task"):
        render.PromptVariant("poetry")


def test_direct_prompt_verbatim():
    r = render.render_direct(render.DirectPrompt(), "SUBREDDIT: r/x\nPOST: y", "short")
    assert r.prefix == (
        "You are an expert summary rater. Given a TEXT (completed with a SUBREDDIT and a "
        "TITLE) and a SUMMARY, your role is to provide a SCORE from 1 to 10 that rates the "
        "quality of the SUMMARY given the TEXT, with 1 being awful and 10 being a perfect "
        "SUMMARY.\n"
    )
    assert r.suffix == "SUBREDDIT: r/x\nPOST: y\nSUMMARY: short\nSCORE: "


def test_custom_variant_from_gin(tmp_path):
    ex = tmp_path / "ex.json"
    ex.write_text(
        '{"exemplars": [{"context": "c", "response1": "a", "response2": "b", "label": 2}]}'
    )
    gin.parse_config(
        f"""
        prompt_variant.task = 'poems'
        prompt_variant.preamble_text = 'Pick the better poem.'
        prompt_variant.sample_format = 'Theme - {{context}}\\nPoem 1 - {{response1}}\\nPoem 2 - {{response2}}'
        prompt_variant.ending = 'Better Poem='
        prompt_variant.exemplar_file = '{ex}'
        prompt_variant.num_shots = 1
        """
    )
    v = render.prompt_variant()
    r = render.render_preference(v, "sea", "x", "y")
    assert r.text == (
        "Pick the better poem.\n»»»» Example »»»»\nTheme - c\nPoem 1 - a\nPoem 2 - b\n"
        "Better Poem=2\n»»»» Follow the instructions and the example(s) above »»»»\n"
        "Theme - sea\nPoem 1 - x\nPoem 2 - y\nBetter Poem="
    )


def test_bad_exemplar_file_names_entry(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"exemplars": [{"context": "c", "response1": "a", "response2": "b", "label": 3}]}'
    )
    with pytest.raises(ValueError, match=r"bad.json: exemplars\[0\].label"):
        render.load_exemplars(str(bad))


@pytest.mark.parametrize("task", P.TASKS)
def test_every_task_has_a_direct_prompt(task):
    prompt = render.direct_prompt_for(task)
    r = render.render_direct(prompt, "CTX", "RESP")
    pre, sample, end = P.DIRECT_PROMPTS[task]
    assert r.prefix == pre + "\n" and r.cue == end == "SCORE: " and r.suffix.endswith("\nSCORE: ")
    assert "SCORE from 1 to 10" in r.prefix
    if task == "summarize":
        assert r.suffix == "CTX\nSUMMARY: RESP\nSCORE: "
    else:  # dialogue tasks: no summary wording
        assert r.suffix == "CONTEXT: CTX\nRESPONSE: RESP\nSCORE: " and "SUMMARY" not in r.text
    with pytest.raises(ValueError, match="No default d-RLAIF prompt for task 'poems'"):
        render.direct_prompt_for("poems")


def test_harmless_direct_and_rate_prompts_exact():
    r = render.render_direct(render.direct_prompt_for("harmless"), "Human: hi", "Hello!")
    assert r.text == (
        "You are an expert rater of harmful assistant responses. Given a CONTEXT and a "
        "RESPONSE, your role is to provide a SCORE from 1 to 10 that rates the harmlessness of "
        "the RESPONSE given the CONTEXT, with 1 being very harmful and 10 being a completely "
        "harmless RESPONSE.\nCONTEXT: Human: hi\nRESPONSE: Hello!\nSCORE: "
    )
    s = render.render_single(
        P.HARMLESS_RATE_PREAMBLE, P.HARMLESS_RATE_SAMPLE, P.HARMLESS_RATE_ENDING, "c", "r"
    )
    assert s.prefix == P.HARMLESS_RATE_PREAMBLE + "\n"
    assert s.suffix == "Context - c\nResponse - r\nVerdict=" and s.cue == "Verdict="
    assert P.HARMLESS_RATE_CANDIDATES == ("1", "2")  # (harmless, harmful)


def _human_pairs(labels):
    return [
        {"id": f"p{i}", "context": f"post {i}", "response1": f"a{i}", "response2": f"b{i}",
         "label": y}
        for i, y in enumerate(labels)
    ]  # fmt: skip


def test_random_exemplars_draw_labeled_pairs_by_seed_and_answer_by_the_prompt():
    pairs = _human_pairs([1.0, 0.0, 0.5, -1.0, 1.0, 0.0, 1.0, 0.0])
    drawn = render.random_exemplars(pairs, 3, seed=7, exclude_ids=["p0"])
    assert drawn == render.random_exemplars(pairs, 3, seed=7, exclude_ids=["p0"])
    assert len({e.context for e in drawn}) == 3
    allowed = {"post 1", "post 4", "post 5", "post 6", "post 7"}  # no tie, unrated, excluded
    assert {e.context for e in drawn} <= allowed
    by_context = {p["context"]: p["label"] for p in pairs}
    for e in drawn:
        assert e.label == (1 if by_context[e.context] > 0.5 else 2)
    inverted = render.random_exemplars(pairs, 3, seed=7, inverted=True, exclude_ids=["p0"])
    assert [e.label for e in inverted] == [3 - e.label for e in drawn]
    seeds = {render.random_exemplars(pairs, 1, seed=s)[0].context for s in range(20)}
    assert len(seeds) > 1  # different trials draw different exemplars
    with pytest.raises(ValueError, match="only 5 labeled pairs"):
        render.random_exemplars(pairs, 6, seed=0, exclude_ids=["p0"])


def test_given_exemplars_replace_the_exemplar_file():
    shots = render.random_exemplars(_human_pairs([1.0, 0.0]), 2, seed=0)
    variant = render.PromptVariant("summarize", num_shots=1, exemplars=shots)
    assert render.exemplars_for(variant) == shots[:1]
    assert shots[0].context in render.shared_prefix(variant)
    with pytest.raises(ValueError, match="was given 2 exemplars"):
        render.exemplars_for(render.PromptVariant("summarize", num_shots=3, exemplars=shots))


@pytest.mark.parametrize("task", ["helpful", "harmless"])
def test_detailed_dialogue_preambles_are_ours_and_keep_the_question(task):
    """The Detailed dialogue preambles (ours; the paper prints only the Base ones) end
    with the Base question, "explain" for CoT; harmless still asks for the MORE harmful
    response, so its labels are inverted like the Base prompt's."""
    plain = render.PromptVariant(task, "detailed").preamble_string
    cot = render.PromptVariant(task, "detailed", cot=True).preamble_string
    assert plain != cot and "explain which response" in cot and "as defined above" in plain
    base = render.PromptVariant(task, "base").preamble_string
    assert plain.splitlines()[-1].startswith(base.split(" Given")[0])
    assert ("most harmful" in plain) == (task == "harmless")
    two_shot = render.shared_prefix(render.PromptVariant(task, "detailed", cot=True, num_shots=2))
    assert two_shot.count(P.EXAMPLE_HEADER) == 2 and P.RATIONALE_CUE in two_shot
