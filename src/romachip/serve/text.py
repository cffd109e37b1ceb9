"""Text out of generated tokens, as a stream: UTF-8 kept whole, stop sequences cut, and text that could
still turn into a stop sequence held back, so the streamed deltas always add up to the final text."""

from __future__ import annotations

from tokenizers import Tokenizer


class TextStream:
    """Feed tokens with `push`; each call returns the text that is now safe to send (maybe "")."""

    def __init__(self, tokenizer: Tokenizer | None, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.sent = ""  # the text sent so far
        self.stopped = False  # a stop sequence was generated

    def _decode(self) -> str | None:
        if self.tokenizer is None:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        # A token that ends in the middle of a UTF-8 character decodes to U+FFFD until the rest arrives; and
        # only a text that extends what was sent can be sent (byte-level BPE decodes prefix-stably otherwise).
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return None
        return text

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self._decode()
        if text is None:
            return ""
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._send(text[:cut])
        return self._send(text[: len(text) - self._held(text)])

    def finish(self) -> str:
        """The rest of the text once generation ended (the held-back tail of an unfinished stop)."""
        if self.stopped:
            return ""
        text = self._decode()
        return "" if text is None else self._send(text)

    def _held(self, text: str) -> int:
        """Length of the longest tail of `text` that begins a stop sequence (it must not be sent yet)."""
        held = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:k]):
                    held = k
                    break
        return held

    def _send(self, text: str) -> str:
        if len(text) <= len(self.sent):
            return ""
        delta = text[len(self.sent) :]
        self.sent = text
        return delta
