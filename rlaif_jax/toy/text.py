"""The toy world's text: its words, posts, summaries, and the parsers that read them back.

A toy *fact* is a (subject, verb, object) triple of single words, e.g. ("landlord",
"raised", "rent"), where the (verb, object) is one of a fixed set of phrases
(`KEY_PHRASES`). A *post* has a main subject (named in its title), 2–3 KEY facts about
that subject and 1–2 SIDE facts about bystanders (`SIDE_SUBJECTS` with `SIDE_PHRASES`,
never in a title or a key fact), each rendered as a chatty sentence with filler words::

    SUBREDDIT: r/legaladvice
    TITLE: my landlord and the rent
    POST: last week my landlord raised the rent again . my mailman missed the bus .
    my landlord ignored my mail . then my landlord sold the couch behind my back .

A *summary* is a sequence of compressed fact sentences "{subject} {verb} {object} ."
(e.g. "landlord raised rent . landlord ignored mail ."; `render_summary`). The ideal
summary states exactly the key facts; the summary generators that make Reddit TL;DRs'
mistakes are in `summaries`.

Subject, verb, object and filler vocabularies are disjoint, so any text can be parsed
back into facts (`parse_context`, `parse_summary`) — the oracle relies on this to judge
arbitrary policy output. Everything is plain Python and deterministic given a
`random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlaif_jax.data.formats import format_tldr_context

# -- Vocabulary ---------------------------------------------------------------------------

# subject -> category (the category picks the usual subreddit).
_SUBJECT_CATEGORY = {
    **dict.fromkeys(("landlord", "roommate", "neighbor", "tenant"), "legal"),
    **dict.fromkeys(
        ("sister", "brother", "mom", "dad", "cousin", "uncle", "aunt", "grandma", "son"),
        "family",
    ),
    **dict.fromkeys(("girlfriend", "boyfriend", "wife", "husband", "ex"), "romance"),
    **dict.fromkeys(("boss", "coworker", "manager", "teacher", "professor", "coach"), "work"),
    **dict.fromkeys(("friend", "daughter"), "family"),
    **dict.fromkeys(("cat", "dog", "parrot"), "pets"),
}
MAIN_SUBJECTS: tuple[str, ...] = tuple(_SUBJECT_CATEGORY)
# Side facts are about bystanders who never title a post, so a side fact in a summary is
# visible from its subject token alone (a tiny model need not match it against the title).
SIDE_SUBJECTS: tuple[str, ...] = (
    "stranger", "mailman", "plumber", "waiter", "driver", "doctor", "pastor", "janitor",
)  # fmt: skip
SUBJECTS: tuple[str, ...] = MAIN_SUBJECTS + SIDE_SUBJECTS
# Key facts are fixed phrases: every object goes with one verb ("landlord raised rent"),
# so a fact is told by its verb or object token alone — tiny models learn which facts a
# post states from which words occur in it, without binding words across positions.
KEY_PHRASES: tuple[tuple[str, str], ...] = (
    ("raised", "rent"), ("raised", "deposit"), ("crashed", "car"), ("crashed", "truck"),
    ("lost", "phone"), ("lost", "wallet"), ("broke", "laptop"), ("broke", "window"),
    ("hid", "keys"), ("hid", "money"), ("stole", "ring"), ("stole", "necklace"),
    ("sold", "couch"), ("sold", "piano"), ("painted", "fence"), ("painted", "door"),
    ("ruined", "garden"), ("ruined", "wedding"), ("burned", "dinner"), ("burned", "cake"),
    ("cancelled", "party"), ("cancelled", "vacation"), ("ignored", "mail"),
    ("ignored", "contract"), ("fixed", "fridge"), ("fixed", "stove"), ("borrowed", "bike"),
    ("borrowed", "camera"), ("bought", "tv"), ("bought", "boat"), ("returned", "jacket"),
    ("returned", "shoes"), ("cleaned", "bed"), ("cleaned", "desk"), ("forgot", "ticket"),
    ("forgot", "check"), ("took", "lamp"), ("took", "guitar"), ("moved", "plants"),
    ("moved", "lease"),
)  # fmt: skip
# Bystanders' doings use their own verbs and objects: a side fact is visible from any of
# its words.
SIDE_PHRASES: tuple[tuple[str, str], ...] = (
    ("missed", "bus"), ("spilled", "coffee"), ("dropped", "parcel"), ("parked", "van"),
    ("delivered", "letter"), ("washed", "dishes"), ("cooked", "soup"), ("watered", "lawn"),
)  # fmt: skip
# Objects that never occur in a post: most invented facts use one, so a hallucination is
# visible at the token level (as a real model's invented entity often is).
PHANTOM_PHRASES: tuple[tuple[str, str], ...] = (
    ("bought", "yacht"), ("sold", "castle"), ("stole", "diamond"), ("crashed", "helicopter"),
    ("lost", "horse"), ("ruined", "painting"), ("broke", "watch"), ("cleaned", "pool"),
    ("borrowed", "tractor"), ("took", "violin"),
)  # fmt: skip
VERB_OF: dict[str, str] = {o: v for v, o in KEY_PHRASES + SIDE_PHRASES + PHANTOM_PHRASES}
VERBS: tuple[str, ...] = tuple(dict.fromkeys(v for v, _ in KEY_PHRASES))
SIDE_VERBS: tuple[str, ...] = tuple(v for v, _ in SIDE_PHRASES)
OBJECTS: tuple[str, ...] = tuple(o for _, o in KEY_PHRASES)
SIDE_OBJECTS: tuple[str, ...] = tuple(o for _, o in SIDE_PHRASES)
PHANTOM_OBJECTS: tuple[str, ...] = tuple(o for _, o in PHANTOM_PHRASES)
_CATEGORY_SUBREDDIT = {
    "legal": "legaladvice",
    "family": "relationships",
    "romance": "dating_advice",
    "work": "careerguidance",
    "pets": "pets",
}
_GENERIC_SUBREDDITS = ("tifu", "offmychest", "askreddit")
SUBREDDITS: tuple[str, ...] = tuple(_CATEGORY_SUBREDDIT.values()) + _GENERIC_SUBREDDITS

# Filler words in posts (never in summaries); disjoint from subjects/verbs/objects.
_LEADS = ("", "", "", "", "", "", "yesterday", "today", "last week", "then", "so",
          "also")  # fmt: skip
_DETS = ("the", "the", "my", "our", "their")
_TAILS = ("", "", "", "", "", "", "", "again", "twice", "on purpose",
          "behind my back")  # fmt: skip
_TITLES = ("my {s} and the {o}", "need advice about my {s}", "my {s} is driving me crazy",
           "what do i do about my {s} ?", "update on my {s}", "help with my {s} and the {o}")  # fmt: skip

_FILLER_WORDS = {w for p in _LEADS + _DETS + _TAILS + _TITLES for w in p.split()} | {"my"}
_ALL_OBJECTS = set(OBJECTS) | set(SIDE_OBJECTS) | set(PHANTOM_OBJECTS)
_ALL_VERBS = set(VERBS) | set(SIDE_VERBS)
assert len(_ALL_OBJECTS) == len(OBJECTS) + len(SIDE_OBJECTS) + len(PHANTOM_OBJECTS)
assert not (set(VERBS) & set(SIDE_VERBS) or set(MAIN_SUBJECTS) & set(SIDE_SUBJECTS))
assert not (set(SUBJECTS) & _ALL_VERBS or set(SUBJECTS) & _ALL_OBJECTS or _ALL_VERBS & _ALL_OBJECTS)
assert not (_FILLER_WORDS & (set(SUBJECTS) | _ALL_VERBS | _ALL_OBJECTS))
ALL_WORDS: tuple[str, ...] = tuple(
    sorted(set(SUBJECTS) | _ALL_VERBS | _ALL_OBJECTS | _FILLER_WORDS | {".", "?"})
)
_S, _V, _O = frozenset(SUBJECTS), frozenset(_ALL_VERBS), frozenset(_ALL_OBJECTS)

Fact = tuple[str, str, str]  # (subject, verb, object)


@dataclass(frozen=True)
class Post:
    """A toy post. `facts` are in post order; key facts are those about `main_subject`."""

    subreddit: str
    title: str
    main_subject: str
    facts: tuple[Fact, ...]
    sentences: tuple[str, ...]  # rendered post sentences, one per fact

    @property
    def key_facts(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f[0] == self.main_subject)

    @property
    def side_facts(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f[0] != self.main_subject)

    @property
    def context(self) -> str:
        """The model-facing text: 'SUBREDDIT: r/…\\nTITLE: …\\nPOST: …' (real TL;DR layout)."""
        return format_tldr_context(self.subreddit, self.title, " ".join(self.sentences))


def _post_sentence(fact: Fact, rng: random.Random) -> str:
    s, v, o = fact
    words = [rng.choice(_LEADS), "my", s, v, rng.choice(_DETS), o, rng.choice(_TAILS), "."]
    return " ".join(w for w in words if w)


def make_post(rng: random.Random) -> Post:
    """A random post: 2–3 key facts (distinct key phrases) and 1–2 side facts (distinct
    bystanders and side phrases), 3–5 sentences in random order (~25–40 words with the
    title)."""
    main = rng.choice(MAIN_SUBJECTS)
    n_key = rng.choice((2, 3, 3))
    n_side = rng.randint(1, 2)
    facts = [(main, v, o) for v, o in rng.sample(KEY_PHRASES, n_key)]
    side = zip(rng.sample(SIDE_SUBJECTS, n_side), rng.sample(SIDE_PHRASES, n_side))
    facts += [(s, v, o) for s, (v, o) in side]
    rng.shuffle(facts)
    category = _SUBJECT_CATEGORY[main]
    if rng.random() < 0.75:
        subreddit = _CATEGORY_SUBREDDIT[category]
    else:
        subreddit = rng.choice(_GENERIC_SUBREDDITS)
    title_obj = next(f[2] for f in facts if f[0] == main)
    title = rng.choice(_TITLES).format(s=main, o=title_obj)
    sentences = tuple(_post_sentence(f, rng) for f in facts)
    return Post(subreddit, title, main, tuple(facts), sentences)


# -- Parsing ------------------------------------------------------------------------------


class ContextError(ValueError):
    """A context that is not a toy-world post (no title subject or no parseable facts)."""


def _field(context: str, name: str) -> str:
    for line in context.split("\n"):
        if line.startswith(name + ":"):
            return line[len(name) + 1 :].strip()
    raise ContextError(f"toy context has no '{name}:' line: {context[:80]!r}")


def parse_context(context: str) -> tuple[str, tuple[Fact, ...]]:
    """(main subject, facts in post order) read back from a rendered toy context.

    The main subject is the first subject word of the TITLE line; each POST sentence
    gives the first subject, first verb and first object word it contains.
    Raises ContextError for text that is not a toy post.
    """
    title_subjects = [w for w in _field(context, "TITLE").split() if w in _S]
    if not title_subjects:
        raise ContextError(f"toy context TITLE names no subject: {context[:80]!r}")
    facts = []
    for sentence in _field(context, "POST").split(" ."):
        words = sentence.split()
        s = next((w for w in words if w in _S), None)
        v = next((w for w in words if w in _V), None)
        o = next((w for w in words if w in _O), None)
        if s and v and o:
            facts.append((s, v, o))
    if not facts:
        raise ContextError(f"toy context POST has no parseable fact: {context[:80]!r}")
    return title_subjects[0], tuple(facts)


@dataclass(frozen=True)
class ParsedSummary:
    """A summary read as fact sentences. `num_tokens` counts whitespace tokens after
    splitting off periods (the oracle's length unit; a clean fact sentence is 4)."""

    facts: tuple[Fact, ...]  # well-formed "{s} {v} {o} ." sentences, in order, repeats kept
    num_broken: int  # non-empty chunks that are not a well-formed, terminated fact
    num_tokens: int


def parse_summary(text: str) -> ParsedSummary:
    """Parses any string (policy output included) into fact sentences; never raises.

    Text is lower-cased and split on whitespace with "." as its own token. A chunk ending
    in "." is a fact iff it is exactly [subject, verb, object]; every other non-empty chunk
    (wrong words, wrong order, missing period at the end) is broken. Stray extra periods
    form empty chunks, which are ignored apart from their length.
    """
    tokens = str(text).lower().replace(".", " . ").split()
    facts: list[Fact] = []
    broken = 0
    chunk: list[str] = []
    for tok in tokens:
        if tok != ".":
            chunk.append(tok)
            continue
        if len(chunk) == 3 and chunk[0] in _S and chunk[1] in _V and chunk[2] in _O:
            facts.append((chunk[0], chunk[1], chunk[2]))
        elif chunk:
            broken += 1
        chunk = []
    if chunk:  # unterminated tail, e.g. a truncated sentence
        broken += 1
    return ParsedSummary(tuple(facts), broken, len(tokens))


def render_summary(facts: list[Fact] | tuple[Fact, ...]) -> str:
    """Fact triples -> 'landlord raised rent . landlord ignored mail .'"""
    return " ".join(f"{s} {v} {o} ." for s, v, o in facts)
