"""Incremental detokenization and stop strings, as vLLM's detokenizer does them."""

from __future__ import annotations

from llmlab.inference.request import Request


def detokenize(tokenizer, req: Request, eos_token_id: int | None) -> None:
    """Extend the request's text by its new tokens' (incremental detokenization, as in vLLM): decode the
    new tokens after a few of context, once with and once without them, and append the difference, so
    a step costs the same however long the output is, and tokenizers whose text depends on neighbours
    (a leading space, bytes of one character split over tokens) come out as a full decode would. Text
    ending in half a UTF-8 character waits for the rest, unless the request has finished. Then stop
    strings are looked for in the new text (and the stop string's length before it)."""
    ids = req.output_ids[:-1] if req.output_ids and req.output_ids[-1] == eos_token_id else req.output_ids
    before = tokenizer.decode(ids[req.prefix_offset: req.read_offset])
    after = tokenizer.decode(ids[req.prefix_offset:])
    if after.endswith("\ufffd") and not req.finished:
        return
    seen = len(req.text)
    req.text += after[len(before):]
    req.prefix_offset, req.read_offset = req.read_offset, len(ids)
    for s in req.params.stop:
        cut = req.text.find(s, max(0, seen - len(s) + 1))
        if cut >= 0:
            req.text, req.finish_reason = req.text[:cut], "stop"
