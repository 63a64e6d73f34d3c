"""Chat-template wrapping of labeling prompts for instruction-tuned labelers.

An instruction-tuned checkpoint (Gemma-it, Llama-3-Instruct, Qwen-Instruct) reads its
prompts in its chat format. A rendered labeling prompt (`render.RenderedPrompt`) is
wrapped as ONE user turn followed by the start of the model turn, and the model turn
begins with the answer cue the labeler would write itself:

    {head}{preamble + exemplars}{sample [+ instruction]}{tail}{cue}
    '---------- prefix -------''----------------- suffix ----------'

head/tail are what the template writes around the user content (head includes the
BOS text where the template writes one; tail ends with the model-turn header). They are
found once by rendering the template around a placeholder, so the shared-prefix split
survives: wrapped prefix = head + prefix, wrapped suffix = user part + tail + cue. The
cue is `Preferred Summary=` / `Preferred Response=` (non-CoT), `Rationale:` (CoT step
1), `Rationale: <rationale>\\n<ending>` (CoT step 2) or `SCORE: ` (d-RLAIF), so the
candidate answers are still read at the position right after the cue.

Templates that `trim` the message content (Gemma, Llama-3) are detected, and the user
content is trimmed the same way, so `wrapped.text == render_chat([user turn]) + cue`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlaif_jax.labeling.render import RenderedPrompt

# Settings values besides the built-in family names of `data.hf_tokenizer`.
AUTO, NONE = "auto", "none"
_PLACEHOLDER = "\u27e6RLAIF-USER-CONTENT\u27e7"  # never in real prompts; survives `trim`


def _families() -> tuple[str, ...]:
    from rlaif_jax.data.hf_tokenizer import BUILTIN_TEMPLATES

    return tuple(sorted(BUILTIN_TEMPLATES))


def validate_mode(mode: str, where: str) -> None:
    """Raises naming `where` (a gin binding) unless mode is auto | none | a family."""
    if mode not in (AUTO, NONE) and mode not in _families():
        raise ValueError(
            f"{where}={mode!r}: choose 'auto' (the labeler vocabulary's chat template when it "
            f"has one), 'none' (plain prompts) or a built-in chat format {list(_families())}."
        )


@dataclass(frozen=True)
class ChatFormat:
    """The text a chat template writes around one user turn.

    head: before the user content (e.g. '<bos><start_of_turn>user\\n').
    tail: after it, through the model-turn header (e.g. '<end_of_turn>\\n<start_of_turn>
      model\\n').
    trims: the template strips whitespace around the content (jinja `| trim`).
    """

    head: str
    tail: str
    trims: bool = False

    @classmethod
    def from_renderer(cls, render_user: Any, name: str = "chat template") -> ChatFormat:
        """From `render_user(content) -> str`, the full chat text of one user turn with
        the generation prompt. Raises naming `name` if the content does not appear
        exactly once or is transformed beyond trimming."""
        text = render_user(_PLACEHOLDER)
        if text.count(_PLACEHOLDER) != 1:
            raise ValueError(
                f"{name}: the user content appears {text.count(_PLACEHOLDER)} times in the "
                "rendered chat (expected once); set chat_template='none' for plain prompts."
            )
        head, tail = text.split(_PLACEHOLDER)
        padded = render_user(" \n" + _PLACEHOLDER + "\n ")
        if padded == head + " \n" + _PLACEHOLDER + "\n " + tail:
            trims = False
        elif padded == text:
            trims = True
        else:
            raise ValueError(
                f"{name}: the template rewrites the user content beyond trimming whitespace; "
                "labeling prompts cannot keep a shared prefix (set chat_template='none')."
            )
        return cls(head, tail, trims)

    def wrap(self, rendered: RenderedPrompt) -> RenderedPrompt:
        """The chat-formatted prompt: prefix = head + prefix, suffix = user + tail + cue."""
        if not rendered.cue:
            raise ValueError(
                "A chat-wrapped prompt needs its answer cue: build it with render.render_* "
                "(RenderedPrompt.cue is empty)."
            )
        prefix, user = rendered.prefix, rendered.user
        if self.trims:
            prefix, user = prefix.lstrip(), user.rstrip()
        return RenderedPrompt(
            self.head + prefix, user + self.tail + rendered.cue, rendered.cue, user
        )


def chat_format(vocab: Any, mode: str = AUTO) -> ChatFormat | None:
    """The labeler's chat format, or None for plain prompts.

    mode 'auto': the vocabulary's `chat_template` (`HFTokenizerVocabulary`) when it has
    one, else plain; 'none': plain; 'gemma' | 'llama3' | 'qwen': that built-in format.
    """
    validate_mode(mode, "chat_template")
    if mode == NONE:
        return None
    if mode == AUTO:
        if not getattr(vocab, "chat_template", None) or not hasattr(vocab, "render_chat"):
            return None

        def render_user(content: str) -> str:
            return vocab.render_chat([{"role": "user", "content": content}], True)

        return ChatFormat.from_renderer(render_user, "tokenizer_config.json chat_template")
    from rlaif_jax.data.hf_tokenizer import render_builtin

    return ChatFormat.from_renderer(
        lambda c: render_builtin(mode, [{"role": "user", "content": c}], True),
        f"built-in chat format {mode!r}",
    )


def wrap(fmt: ChatFormat | None, rendered: RenderedPrompt) -> RenderedPrompt:
    """`fmt.wrap(rendered)`, or `rendered` unchanged for plain prompts (fmt None)."""
    return rendered if fmt is None else fmt.wrap(rendered)
