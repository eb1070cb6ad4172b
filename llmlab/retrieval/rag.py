"""Retrieval-augmented generation through the two services: the question to the retrieval service, the
passages numbered into a prompt that asks for a cited answer, the prompt to an OpenAI-compatible
completions endpoint (llmlab's inference service, or vLLM), the answer scored as SQuAD scores it."""

from __future__ import annotations

import re

from tqdm.auto import tqdm

from llmlab.evals.qa import qa_scores

INSTRUCTION = ("Answer the question with a short phrase taken from the passages, and cite the passage you "
               "used as [n].")


def build_prompt(question: str, hits: list[dict], max_chars: int = 6000) -> str:
    """The instruction, the passages as "[n] title: text" (the lowest-ranked cut first to fit ``max_chars``),
    the question, and "Answer:"."""
    tail = f"\n\nQuestion: {question}\nAnswer:"
    room = max_chars - len(INSTRUCTION) - len(tail)
    blocks = []
    for n, h in enumerate(hits, start=1):
        block = f"[{n}] {h.get('title', '')}: {h['text']}".strip()
        if room - len(block) - 2 < 0:
            break
        blocks.append(block)
        room -= len(block) + 2
    return INSTRUCTION + "\n\n" + "\n\n".join(blocks) + tail


def citations(answer: str, n_passages: int) -> list[int]:
    """The passage numbers an answer cites ([n]), in range, in order of first mention."""
    seen = []
    for m in re.finditer(r"\[(\d+)\]", answer):
        i = int(m.group(1))
        if 1 <= i <= n_passages and i not in seen:
            seen.append(i)
    return seen


def answer(question: str, retriever, llm, model: str, k: int = 5, max_tokens: int = 32,
           max_prompt_chars: int = 6000) -> dict:
    """One question through the pipeline: ``retriever.search`` (a RetrievalClient or ShardedRetrieval) and
    ``llm`` an ``openai.OpenAI`` client; greedy decoding, the first line of the completion is the answer."""
    hits = retriever.search(question, k=k)
    prompt = build_prompt(question, hits, max_prompt_chars)
    out = llm.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
    text = out.choices[0].text.strip().split("\n")[0]
    cited = citations(text, len(hits))
    return {"question": question, "answer": re.sub(r"\s*\[\d+\]", "", text).strip(), "raw": text,
            "citations": cited, "hits": hits, "prompt_chars": len(prompt)}


def evaluate(questions: list[dict], retriever, llm, model: str, k: int = 5, gold_key=None, **kwargs) -> dict:
    """Exact match and F1 of the answers (best over each question's "answers"), and the retrieval recall@k:
    the fraction of questions with a passage ``gold_key(hit, question)`` judges gold among the k (by default:
    a passage containing one of the answers)."""
    gold_key = gold_key or (lambda hit, q: any(a.lower() in hit["text"].lower() for a in q["answers"]))
    rows = []
    for q in tqdm(questions, desc="RAG", unit="question"):
        r = answer(q["question"], retriever, llm, model, k=k, **kwargs)
        em, f1 = qa_scores(r["answer"], q["answers"])
        rows.append({**r, "answers": q["answers"], "em": em, "f1": f1,
                     "retrieved_gold": any(gold_key(h, q) for h in r["hits"])})
    n = max(1, len(rows))
    return {"questions": len(rows), "exact_match": sum(r["em"] for r in rows) / n, "f1": sum(r["f1"] for r in rows) / n,
            f"recall@{k}": sum(r["retrieved_gold"] for r in rows) / n,
            "cited": sum(bool(r["citations"]) for r in rows) / n, "rows": rows}
