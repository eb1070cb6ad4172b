"""Retrieval-augmented generation through the two services: the question to the retrieval service, the
passages numbered into a prompt that asks for a cited answer, the prompt to an OpenAI-compatible
completions endpoint (llmlab's inference service, or vLLM), the answer scored as SQuAD scores it."""

from __future__ import annotations

import re

from tqdm.auto import tqdm

from llmlab.evals.qa import contains_answer, qa_scores

INSTRUCTION = ("Answer the question with a short phrase taken from the passages, and cite the passage you "
               "used as [n].")


def _blocks(question: str, hits: list[dict], max_chars: int, min_cut: int = 200) -> tuple[list[str], str]:
    tail = f"\n\nQuestion: {question}\nAnswer:"
    room = max_chars - len(INSTRUCTION) - len(tail) - 2
    blocks = []
    for n, h in enumerate(hits, start=1):
        block = f"[{n}] {h.get('title', '')}: {h['text']}".strip()
        if len(block) > room:  # the last passage that fits in part (at least min_cut characters), cut at a word
            if room >= min_cut:
                blocks.append(block[:room].rsplit(" ", 1)[0])
            break
        blocks.append(block)
        room -= len(block) + 2
    return blocks, tail


def _prompt(question: str, hits: list[dict], max_chars: int) -> tuple[str, int]:
    blocks, tail = _blocks(question, hits, max_chars)
    return INSTRUCTION + "\n\n" + "\n\n".join(blocks) + tail, len(blocks)


def build_prompt(question: str, hits: list[dict], max_chars: int = 6000) -> str:
    """The instruction, the passages as "[n] title: text" (the first that does not fit cut at a word, the rest
    left out, to fit ``max_chars``), the question, and "Answer:"."""
    return _prompt(question, hits, max_chars)[0]


def citations(answer: str, n_passages: int) -> list[int]:
    """The passage numbers an answer cites ([n]), in range, in order of first mention."""
    seen = []
    for m in re.finditer(r"\[(\d+)\]", answer):
        i = int(m.group(1))
        if 1 <= i <= n_passages and i not in seen:
            seen.append(i)
    return seen


def answer(question: str, retriever, llm, model: str, k: int = 5, max_tokens: int = 32,
           max_prompt_chars: int = 6000, shrink: float = 0.75, tries: int = 6) -> dict:
    """One question through the pipeline: ``retriever.search`` (a RetrievalClient or ShardedRetrieval) and
    ``llm`` an ``openai.OpenAI`` client; greedy decoding, the first line of the completion is the answer.

    A character budget cannot promise a token count (a text of numbers or non-Latin script takes more tokens
    per character): when the server answers 400 "maximum context length" (the OpenAI API's wording, which vLLM
    and llmlab's server share), the prompt is rebuilt to ``shrink`` times its length, up to ``tries`` times;
    "shortened" counts those retries."""
    import openai

    hits = retriever.search(question, k=k)
    budget = max_prompt_chars
    for attempt in range(tries):
        prompt, shown = _prompt(question, hits, budget)
        try:
            out = llm.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
            break
        except openai.BadRequestError as e:
            if attempt == tries - 1 or "maximum context length" not in str(e).lower():
                raise
            budget = int(shrink * len(prompt))
    text = out.choices[0].text.strip().split("\n")[0]
    cited = citations(text, len(hits))
    return {"question": question, "answer": re.sub(r"\s*\[\d+\]", "", text).strip(), "raw": text,
            "citations": cited, "hits": hits, "prompt": prompt, "prompt_passages": shown, "shortened": attempt}


def evaluate(questions: list[dict], retriever, llm, model: str, k: int = 5, gold_key=None, **kwargs) -> dict:
    """Exact match and F1 of the answers (best over each question's "answers"), and the retrieval recall@k:
    the fraction of questions with a passage ``gold_key(hit, question)`` judges gold among the k (by default:
    a passage containing one of the answers)."""
    gold_key = gold_key or (lambda hit, q: contains_answer(hit["text"], q["answers"]))
    rows = []
    for q in tqdm(questions, desc="RAG", unit="question"):
        r = answer(q["question"], retriever, llm, model, k=k, **kwargs)
        em, f1 = qa_scores(r["answer"], q["answers"])
        rows.append({**r, "answers": q["answers"], "em": em, "f1": f1,
                     "retrieved_gold": any(gold_key(h, q) for h in r["hits"])})
    n = max(1, len(rows))
    return {"questions": len(rows), "exact_match": sum(r["em"] for r in rows) / n, "f1": sum(r["f1"] for r in rows) / n,
            f"recall@{k}": sum(r["retrieved_gold"] for r in rows) / n,
            "cited": sum(bool(r["citations"]) for r in rows) / n,
            "prompts_shortened": sum(r["shortened"] > 0 for r in rows), "rows": rows}


def reader_text(questions: list[dict], passages: list[dict], max_chars: int, seed: int = 0) -> str:
    """Training text for a small reader: each question's prompt with its gold passage and one other passage
    (a Wikipedia one, never another question's gold paragraph; in random order), then its first answer and the
    gold passage's citation, one example after another."""
    import random

    rng = random.Random(seed)
    others = [p for p in passages if p["pid"].startswith("wiki:")]
    out = []
    for q in questions:
        hits = [passages[q["row"]], others[rng.randrange(len(others))]]
        first = rng.random() < 0.5
        hits = hits if first else hits[::-1]
        out.append(build_prompt(q["question"], hits, max_chars) + f" {q['answers'][0]} [{1 if first else 2}]\n\n")
    return "".join(out)
