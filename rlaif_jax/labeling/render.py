"""Renders labeling prompts from `prompts.py` data and a `PromptVariant`.

Every prompt is split into a SHARED PREFIX (preamble + exemplar block, identical for
all pairs of a variant) and a per-pair SUFFIX (sample + ending), so the scorer can
encode the prefix once per batch. Tokenization is always `encode(prefix) +
encode(suffix)` (see `tokens.tokenize_prompt`), in scoring and in labeler training
alike, so the shared-prefix and naive paths see identical token sequences.

Each rendered prompt also names its answer cue (`RenderedPrompt.cue`) and the user part
of its suffix, so `chat.py` can wrap it in an instruction-tuned labeler's chat template;
without a template the text here is what the model reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import gin

from rlaif_jax.labeling import prompts as P
from rlaif_jax.labeling.exemplar_pool import Exemplar, load_exemplars, random_exemplars

SEP = "\n"


@dataclass(frozen=True)
class PromptVariant:
    """One labeling prompt configuration (paper Table 2 rows), all text overridable.

    task: 'summarize' | 'helpful' | 'harmless' (picks default texts); None = the task of
      the data being labeled (the label stage fills it in with `with_task`).
    preamble: a name in `prompts.PREAMBLES[task]` ('base', 'detailed').
    num_shots: exemplars taken from the start of the exemplar file (0, 1, 2, 8 ...).
    cot: two-step chain of thought (rationale, then score).
    preamble_text / cot_preamble_text / sample_format / ending / cot_ending /
    exemplar_file: custom text replacing the task defaults (None = default).
    exemplars: the exemplars themselves, replacing the file (the label stage's random
      exemplars drawn from training pairs, `label.exemplar_seed`; paper App. D).
    asks_more_harmful: the preamble asks which response is worse, so labels are inverted
    into a preference (None = the task default: True for 'harmless').
    name: label for logs and metrics.
    """

    task: str | None = "summarize"
    preamble: str = "base"
    num_shots: int = 0
    cot: bool = False
    preamble_text: str | None = None
    cot_preamble_text: str | None = None
    sample_format: str | None = None
    ending: str | None = None
    cot_ending: str | None = None
    exemplar_file: str | None = None
    asks_more_harmful: bool | None = None
    name: str = ""
    exemplars: tuple[Exemplar, ...] | None = None

    def __post_init__(self):
        if self.task is None:
            return  # resolved later by `with_task`
        if self.task not in P.TASKS and (
            self.preamble_text is None or self.sample_format is None or self.ending is None
        ):
            raise ValueError(
                f"PromptVariant.task={self.task!r} is not one of {P.TASKS}; a custom task needs "
                "preamble_text, sample_format and ending (gin: prompt_variant.*)."
            )
        if self.preamble_text is None and self.preamble not in P.PREAMBLES.get(self.task, {}):
            raise ValueError(
                f"PromptVariant.preamble={self.preamble!r} is not defined for task "
                f"{self.task!r}; choose one of {sorted(P.PREAMBLES.get(self.task, {}))} or set "
                "prompt_variant.preamble_text."
            )
        if self.num_shots < 0:
            raise ValueError(f"PromptVariant.num_shots must be >= 0, got {self.num_shots}.")

    def with_task(self, task: str) -> PromptVariant:
        """This variant for `task` when its task was left to the data (None)."""
        return self if self.task is not None else dataclasses.replace(self, task=task)

    # Resolved texts -------------------------------------------------------------------

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        cot = " + CoT" if self.cot else ""
        return f"{self.task}: {self.preamble.capitalize()}{cot} {self.num_shots}-shot"

    @property
    def preamble_string(self) -> str:
        if self.cot and self.cot_preamble_text is not None:
            return self.cot_preamble_text
        if self.preamble_text is not None:
            return self.preamble_text
        plain, cot = P.PREAMBLES[self.task][self.preamble]
        return cot if self.cot else plain

    @property
    def sample_string(self) -> str:
        return self.sample_format if self.sample_format is not None else P.SAMPLE_FORMATS[self.task]

    @property
    def ending_string(self) -> str:
        return self.ending if self.ending is not None else P.ENDINGS[self.task]

    @property
    def cot_ending_string(self) -> str:
        if self.cot_ending is not None:
            return self.cot_ending
        if self.task not in P.COT_ENDINGS:
            raise ValueError(
                f"Custom task {self.task!r} with cot=True needs prompt_variant.cot_ending."
            )
        return P.COT_ENDINGS[self.task]

    @property
    def exemplar_path(self) -> str:
        if self.exemplar_file is not None:
            return self.exemplar_file
        if self.task not in P.EXEMPLAR_FILES:
            raise ValueError(
                f"Custom task {self.task!r} with shots needs prompt_variant.exemplar_file."
            )
        return P.EXEMPLAR_FILES[self.task]

    @property
    def inverts_labels(self) -> bool:
        if self.asks_more_harmful is not None:
            return self.asks_more_harmful
        return self.task in P.HARMFUL_QUESTION_TASKS


@gin.configurable
def prompt_variant(
    task: str | None = None,
    preamble: str = "base",
    num_shots: int = 0,
    cot: bool = False,
    preamble_text: str | None = None,
    cot_preamble_text: str | None = None,
    sample_format: str | None = None,
    ending: str | None = None,
    cot_ending: str | None = None,
    exemplar_file: str | None = None,
    asks_more_harmful: bool | None = None,
    name: str = "",
) -> PromptVariant:
    """Gin entry point: `label.variant = @prompt_variant()` plus bindings; task None =
    the labeled data's task."""
    return PromptVariant(**locals())


def exemplars_for(variant: PromptVariant) -> tuple[Exemplar, ...]:
    if variant.num_shots == 0:
        return ()
    if variant.exemplars is not None:
        if len(variant.exemplars) < variant.num_shots:
            raise ValueError(
                f"PromptVariant {variant.display_name!r} asks for {variant.num_shots} shots "
                f"but was given {len(variant.exemplars)} exemplars."
            )
        return variant.exemplars[: variant.num_shots]
    path = variant.exemplar_path
    ex = load_exemplars(path)
    if len(ex) < variant.num_shots:
        raise ValueError(
            f"PromptVariant {variant.display_name!r} asks for {variant.num_shots} shots but "
            f"{path} holds only {len(ex)} exemplars."
        )
    return ex[: variant.num_shots]


def render_sample(variant: PromptVariant, context: str, first: str, second: str) -> str:
    return variant.sample_string.format(context=context, response1=first, response2=second)


def _exemplar_block(variant: PromptVariant, ex: Exemplar) -> str:
    parts = [P.EXAMPLE_HEADER, render_sample(variant, ex.context, ex.response1, ex.response2)]
    if variant.cot:
        if not ex.rationale:
            raise ValueError(
                f"CoT few-shot variant {variant.display_name!r}: an exemplar in "
                f"{variant.exemplar_path} has no 'rationale'."
            )
        parts.append(f"{variant.cot_ending_string} {ex.rationale}")
    parts.append(f"{variant.ending_string}{ex.label}")
    return SEP.join(parts)


def shared_prefix(variant: PromptVariant) -> str:
    """Preamble + exemplar block, ending with the separator (identical for every pair)."""
    parts = [variant.preamble_string]
    shots = exemplars_for(variant)
    if shots:
        parts += [_exemplar_block(variant, ex) for ex in shots]
        parts.append(P.EXAMPLES_FOOTER)
    return SEP.join(parts) + SEP


@dataclass(frozen=True)
class RenderedPrompt:
    """One prompt as shared prefix + per-prompt suffix (text = prefix + suffix).

    cue: the answer cue the suffix ends with, the text a labeler writes before its answer
      (the ending, `Rationale:`, `Rationale: <r>\\n<ending>`, `SCORE: `); a chat
      template puts it at the start of the model turn (`chat.py`).
    user: the suffix part before the cue that belongs to the user turn (sample and any
      instruction text, without the separator before the cue). Plain prompts have
      suffix == user + SEP + cue.
    """

    prefix: str  # shared by every pair of the variant
    suffix: str  # this pair: sample + ending (or CoT ending [+ rationale + ending])
    cue: str = ""
    user: str = ""

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


def _plain(prefix: str, user: str, cue: str) -> RenderedPrompt:
    return RenderedPrompt(prefix, user + SEP + cue, cue, user)


def render_preference(
    variant: PromptVariant,
    context: str,
    first: str,
    second: str,
    rationale: str | None = None,
) -> RenderedPrompt:
    """The prompt for one pair in one shown order.

    Non-CoT: `sample \\n ending`. CoT step 1 (`rationale=None`): `sample \\n cot_ending`
    (ends with 'Rationale:'). CoT step 2: `sample \\n cot_ending rationale \\n ending`.
    """
    sample = render_sample(variant, context, first, second)
    prefix = shared_prefix(variant)
    if not variant.cot:
        if rationale is not None:
            raise ValueError("A rationale was given to a non-CoT prompt variant.")
        return _plain(prefix, sample, variant.ending_string)
    # The CoT ending's last line ('Rationale:') is the answer cue; lines before it are
    # an instruction in the user turn.
    instruction, _, cot_cue = variant.cot_ending_string.rpartition(SEP)
    user = sample + SEP + instruction if instruction else sample
    if rationale is None:
        return _plain(prefix, user, cot_cue)
    return _plain(prefix, user, f"{cot_cue} {rationale.strip()}{SEP}{variant.ending_string}")


@dataclass(frozen=True)
class DirectPrompt:
    """d-RLAIF 1-10 scoring prompt (App. D); texts default to the task's."""

    task: str = "summarize"
    preamble_text: str | None = None
    sample_format: str | None = None
    ending: str | None = None

    def parts(self) -> tuple[str, str, str]:
        if self.task in P.DIRECT_PROMPTS:
            pre, sample, end = P.DIRECT_PROMPTS[self.task]
        elif None in (self.preamble_text, self.sample_format, self.ending):
            raise ValueError(
                f"d-RLAIF task {self.task!r} has no default prompt ({sorted(P.DIRECT_PROMPTS)}); "
                "set direct_prompt.preamble_text, sample_format and ending."
            )
        else:
            pre = sample = end = ""
        return (
            self.preamble_text if self.preamble_text is not None else pre,
            self.sample_format if self.sample_format is not None else sample,
            self.ending if self.ending is not None else end,
        )


gin.external_configurable(DirectPrompt, "direct_prompt")


def direct_prompt_for(task: str) -> DirectPrompt:
    """The default d-RLAIF prompt of `task` (one of `prompts.TASKS`)."""
    if task not in P.DIRECT_PROMPTS:
        raise ValueError(
            f"No default d-RLAIF prompt for task {task!r} (have {sorted(P.DIRECT_PROMPTS)}); "
            "set direct_prompt.preamble_text, sample_format and ending."
        )
    return DirectPrompt(task=task)


def render_single(
    preamble: str, sample_format: str, ending: str, context: str, response: str
) -> RenderedPrompt:
    """A one-response prompt: `preamble \\n` | `sample \\n ending` (prefix | suffix);
    `sample_format` has the fields {context} and {response}."""
    sample = sample_format.format(context=context, response=response)
    return _plain(preamble + SEP, sample, ending)


def render_direct(prompt: DirectPrompt, context: str, response: str) -> RenderedPrompt:
    """`preamble \\n` | `sample \\n SCORE: ` (prefix | suffix)."""
    return render_single(*prompt.parts(), context, response)


def swap(pair: Mapping[str, str]) -> dict[str, str]:
    """The pair with its responses shown in the other order."""
    return {**pair, "response1": pair["response2"], "response2": pair["response1"]}


def variants_for_task(task: str, shots: Sequence[int] = (0, 1, 2)) -> list[PromptVariant]:
    """Every preamble x CoT x shot combination defined for `task` (Table 2 rows)."""
    out = []
    for name in P.PREAMBLES[task]:
        for cot in (False, True):
            for n in shots:
                out.append(PromptVariant(task=task, preamble=name, num_shots=n, cot=cot))
    if task == "summarize":
        out.append(PromptVariant(task=task, preamble="detailed", num_shots=8))
    return out


__all__ = [
    "DirectPrompt",
    "Exemplar",
    "PromptVariant",
    "RenderedPrompt",
    "direct_prompt_for",
    "exemplars_for",
    "load_exemplars",
    "random_exemplars",
    "prompt_variant",
    "render_direct",
    "render_preference",
    "render_single",
    "shared_prefix",
    "swap",
    "variants_for_task",
]
