"""Stand-ins the labeling tests share: character vocabularies, rigged and recording
scorers (PromptScorer protocol) and the pairs and texts they read."""

from __future__ import annotations

import math
import re

import numpy as np


class CharVocab:
    """One token per character (test-only); ids >= 3 so 0/1/2 stay pad/eos/unk.
    With ten=True, "10" is one piece (id TEN), like the project's SentencePiece vocabs."""

    eos_id, pad_id, bos_id = 1, 0, None
    TEN = 100_000

    def __init__(self, ten=False):
        self.ten = ten

    def encode(self, s):
        out, i = [], 0
        while i < len(s):
            if self.ten and s.startswith("10", i):
                out.append(self.TEN)
                i += 2
            else:
                out.append(ord(s[i]) + 3)
                i += 1
        return out

    def decode(self, ids):
        return "".join("10" if i == self.TEN else chr(i - 3) for i in ids if i >= 3)


def direct_q(target):
    """The stub's distribution over scores 1..10 (70% of the vocabulary mass)."""
    q = np.exp([-abs(i + 1 - target) * 2.0 for i in range(10)])
    return 0.7 * q / q.sum()


def quality(text: str) -> int:
    return text.count("good")


class RiggedScorer:
    """A stub 'model': reads the shown responses from the prompt text and answers with
    logit(P("1")) = quality(shown 1) − quality(shown 2) + position_bias. With a
    rationale present ('Summary k is better'), it follows the rationale instead.
    Records every call so tests can check batching."""

    def __init__(self, vocab, position_bias=1.5):
        self.vocab, self.bias, self.calls, self.gen_calls = vocab, position_bias, [], []

    def _text(self, prefix, suffix):
        return self.vocab.decode(list(prefix) + list(suffix))

    def score(self, prefix, suffixes, candidate_ids):
        self.calls.append(len(suffixes))
        out = []
        for s in suffixes:
            text = self._text(prefix, s)
            if "SCORE:" in text:  # d-RLAIF: scores peaked at 1 + 3 * quality
                m = re.search(r"SUMMARY: (.*)\n", text)
                q = direct_q(min(10, 1 + 3 * quality(m.group(1))))
                if text.endswith("SCORE: 1"):  # second piece of a two-piece "10"
                    out.append([math.log(q[9] / (q[0] + q[9]))])
                elif self.vocab.ten:
                    out.append(np.log(q).tolist())
                else:  # "1" is also the first piece of "10"
                    lp = np.log(q)
                    lp[0] = lp[9] = math.log(q[0] + q[9])
                    out.append(lp.tolist())
                continue
            blocks = re.findall(r"(?:Summary|Response) ([12]) - (.*)", text.split("Sample")[-1])
            shown = dict(blocks[-2:])
            rat = re.findall(r"Rationale: (?:Summary|Response) ([12]) is better", text)
            if rat:
                z = 2.0 if rat[-1] == "1" else -2.0
            else:
                z = quality(shown["1"]) - quality(shown["2"]) + self.bias
            p1 = 1 / (1 + math.exp(-z))
            # Log-probs over the full vocabulary: the two candidates hold 60% of the mass.
            out.append([math.log(0.6 * p1), math.log(0.6 * (1 - p1))])
        return np.array(out)

    def generate(self, prefix, suffixes, *, max_new_tokens, temperature, top_k, num_samples, seed):
        self.gen_calls.append((len(suffixes), temperature, top_k, num_samples))
        rng = np.random.default_rng(seed)
        out = []
        for s in suffixes:
            text = self._text(prefix, s)
            blocks = dict(re.findall(r"(?:Summary|Response) ([12]) - (.*)", text)[-2:])
            better = "1" if quality(blocks["1"]) >= quality(blocks["2"]) else "2"
            row = []
            for _ in range(num_samples):
                pick = better if temperature == 0 or rng.uniform() < 0.75 else "12"[better == "1"]
                row.append(self.vocab.encode(f" Summary {pick} is better.\nPreferred Summary=1"))
            out.append(row)
        return out


def pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.integers(0, 3, size=2)
        out.append(
            {
                "id": f"p{i}",
                "context": f"post {i}",
                "response1": "good " * a + "x",
                "response2": "good " * b + "y",
                "label": float(a > b) if a != b else 0.5,
                "confidence": 9,
            }
        )
    return out


class AlwaysFirst:
    """A PromptScorer that answers the first candidate ("1") with P = 0.9 whatever it
    reads; records every scored prompt text."""

    def __init__(self, vocab):
        self.vocab, self.texts = vocab, []

    def score(self, prefix, suffixes, candidate_ids):
        for s in suffixes:
            self.texts.append(self.vocab.decode(list(prefix) + list(s)))
        row = [math.log(0.9)] + [math.log(0.1 / (len(candidate_ids) - 1))] * (
            len(candidate_ids) - 1
        )
        return np.array([row] * len(suffixes))

    def generate(self, *a, **k):  # no CoT in these tests
        raise AssertionError("generate is not used")


HEAD = "SUBREDDIT: r/relationships\nTITLE: My best friend forgot my birthday"


LONG_POST = HEAD + "\nPOST: " + "we used to talk every day and " * 60 + "what should I do now?"


CTX, R1, R2 = "Human: how do I bake bread?", "Mix flour and water.", "I cannot help. "


class IdVocab:
    """One token per character; ids >= 4; bos_id = 3 (test-only)."""

    eos_id, pad_id, bos_id = 1, 0, 3

    def encode(self, s):
        return [ord(c) + 4 for c in s]

    def decode(self, ids):
        return "".join(chr(i - 4) for i in ids if i >= 4)


class RecordingScorer:
    """Answers every prompt with fixed log-probs and records the decoded prompt texts."""

    def __init__(self, vocab, k=2):
        self.vocab, self.k, self.texts = vocab, k, []

    def score(self, prefix, suffixes, candidate_ids):
        for s in suffixes:
            self.texts.append(self.vocab.decode(list(prefix) + list(s)))
        lp = np.log(np.linspace(1.0, 2.0, len(candidate_ids)) / 10)
        return np.tile(lp, (len(suffixes), 1))

    def generate(self, prefix, suffixes, *, max_new_tokens, temperature, top_k, num_samples, seed):
        return [[self.vocab.encode(" Response 1 is better.")] * num_samples for _ in suffixes]
