"""The record types that flow between stages (plain dicts of Python/NumPy values).

Every reader (real formats, toy world) yields these, every seqio task carries these
feature names, and every stage consumes them. Strings are untokenized text; each
stage tokenizes with its own model's vocabulary (the labeler and RM may use a
different vocabulary than the policy).

- SFT example:        {"id": str, "context": str, "response": str}
- RL / eval prompt:   {"id": str, "context": str}
- Preference pair:    {"id": str, "context": str, "response1": str, "response2": str,
                       "label": float,        # P(response1 preferred) in [0, 1]; -1 unrated
                       "confidence": int}     # human confidence 1..9, 0 if unknown
- AI preference:      a preference pair plus
                       {"p_order1": float,    # P(resp1 ≻ resp2) with resp1 shown first
                        "p_order2": float,    # P(resp1 ≻ resp2) read from the swapped order
                        "human_label": float, # the human's label of the pair (-1 if none)
                        "rationale": str}     # CoT rationale ('' without CoT)

One name per concept:
- `label` is always P(response1 preferred) according to whoever labeled THIS record:
  the human in a human preference pair (and in a rated policy-sampled pair), the AI
  labeler in an AI preference record (the position-debiased mean of p_order1/p_order2).
  Reward models train on `label` of whichever records they are given.
- `human_label` exists only where a record carries two labels: in an AI preference
  record it keeps the human's `label` of the pair it was made from (-1 when that pair
  had none). Alignment compares `label` with `human_label`; `labeling.labeler.human_label`
  reads a pair's human label from either field.
- `response` is the text after the prompt (SFT target, decoded sample); a pair has two.

`context` is the task's text as shown to models (for summarization: subreddit,
title and post; for dialogue: the transcript up to the last "Assistant:"). Split names
are always train / validation / test (data.tasks maps the OpenAI comparisons' valid1 /
valid2 onto them).
"""

from __future__ import annotations

# The label stage's output directory under WORKDIR (AI preference shards + manifest): the
# reward and evaluate stages and the pipeline read it there unless told otherwise.
LABEL_DIR = "labels"

SFT_FEATURES = ("id", "context", "response")
PROMPT_FEATURES = ("id", "context")
PAIR_FEATURES = ("id", "context", "response1", "response2", "label", "confidence")
AI_PREFERENCE_FEATURES = PAIR_FEATURES + ("p_order1", "p_order2", "human_label", "rationale")

TASKS = ("summarize", "helpful", "harmless")
