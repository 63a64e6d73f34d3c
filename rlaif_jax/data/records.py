"""The record types that flow between stages (plain dicts of Python/NumPy values).

Every reader (real formats, toy world) yields these, every seqio task carries these
feature names, and every stage consumes them. Strings are untokenized text; each
stage tokenizes with its own model's vocabulary (the labeler and RM may use a
different vocabulary than the policy).

- SFT example:        {"id": str, "context": str, "response": str}
- RL / eval prompt:   {"id": str, "context": str}
- Preference pair:    {"id": str, "context": str, "response1": str, "response2": str,
                       "label": float,        # P(response1 preferred) in [0, 1]
                       "confidence": int}     # human confidence 1..9, 0 if unknown
- AI preference:      a preference pair plus
                       {"p_order1": float,    # P(resp1 ≻ resp2) with resp1 shown first
                        "p_order2": float,    # P(resp1 ≻ resp2) read from the swapped order
                        "human_label": float, # original label kept for alignment (-1 if none)
                        "rationale": str}     # CoT rationale ('' without CoT)

`context` is the task's text as shown to models (for summarization: subreddit,
title and post; for dialogue: the transcript up to the last "Assistant:").
"""

from __future__ import annotations

SFT_FEATURES = ("id", "context", "response")
PROMPT_FEATURES = ("id", "context")
PAIR_FEATURES = ("id", "context", "response1", "response2", "label", "confidence")
AI_PREFERENCE_FEATURES = PAIR_FEATURES + ("p_order1", "p_order2", "human_label", "rationale")

TASKS = ("summarize", "helpful", "harmless")
