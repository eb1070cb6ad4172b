"""The MMLU harness (``llmlab.evals.mmlu``, ``llmlab.evals.harness``, ``llmlab eval mmlu``) against
lm-evaluation-harness 0.4.13 itself, run offline: lm-eval's own ``mmlu_<subject>`` task configs with their
dataset pointed at the shared CSVs (written as JSON lines in the columns of ``cais/mmlu``), its ``hf`` model
on a small llmlab model exported as a Hugging Face folder. The model is untrained: equal scores test the
prompt, tokenization, truncation and scoring, not the model."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest

from llmlab.evals import harness, mmlu
from tests.conftest import serve_inference

CLI = str(Path(sys.executable).with_name("llmlab"))
SUBJECTS = ["anatomy", "high_school_physics", "moral_scenarios"]
CONTEXT = 320  # 5-shot prompts are longer: lm-eval's left truncation is exercised


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from llmlab import hf
    from llmlab.tokenization import BPETokenizer
    from llmlab.transformer import TransformerConfig, TransformerLM

    text = "\n".join(mmlu.doc_to_text(q) for s in SUBJECTS for q in mmlu.load(s, "dev"))
    tok = BPETokenizer.train(text, 400, special_tokens=["<|endoftext|>"])  # lm-eval needs an end-of-text token
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=CONTEXT, d_model=32, n_layers=2, n_heads=2), seed=0)
    return hf.export(model, tmp_path_factory.mktemp("mmlu") / "tiny-mmlu", tok)


def test_the_shared_data_and_subject_categories_are_lm_evals():
    """57 subjects with the official counts (14,042 test and 285 dev questions), in lm-eval's categories."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    tasks = Path(lm_eval.tasks.__file__).parent / "mmlu" / "default"
    theirs = {p.stem.removeprefix("mmlu_"): load_yaml(p, resolve_func=False)["tag"].removeprefix("mmlu_")
              .removesuffix("_tasks") for p in tasks.glob("mmlu_*.yaml")}
    assert theirs == mmlu.SUBJECTS and len(mmlu.SUBJECTS) == 57
    assert sum(len(mmlu.load(s)) for s in mmlu.SUBJECTS) == 14_042
    assert sum(len(mmlu.load(s, "dev")) for s in mmlu.SUBJECTS) == 285


def _lm_eval(folder: Path, data: Path, num_fewshot: int, limit: int) -> dict:
    import lm_eval.tasks
    from lm_eval import simple_evaluate
    from lm_eval.tasks._yaml_loader import load_yaml

    configs = []
    for s in SUBJECTS:
        for split in ("test", "dev"):
            with open(data / f"{s}_{split}.jsonl", "w") as f:
                for q in mmlu.load(s, split):
                    f.write(json.dumps({"question": q.question, "subject": s, "choices": list(q.choices),
                                        "answer": q.answer}) + "\n")
        cfg = load_yaml(Path(lm_eval.tasks.__file__).parent / "mmlu" / "default" / f"mmlu_{s}.yaml")
        cfg.pop("tag", None)
        cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {
            split: str(data / f"{s}_{split}.jsonl") for split in ("test", "dev")}})
        configs.append(cfg)
    return simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=configs,
                           num_fewshot=num_fewshot, limit=limit, log_samples=True, batch_size=8, device="cpu")


def test_prompts_loglikelihoods_choices_and_accuracy_equal_lm_evals(folder, tmp_path):
    """5-shot on 3 subjects x 8 questions: every prompt string equal to lm-eval's, every log-likelihood
    within 1e-5 (lm-eval sums float32 log-softmaxes; llmlab's in float64), the same choice for every
    question, the same per-subject accuracy; transformers' run of the folder (``--backend hf``) too."""
    theirs = _lm_eval(folder, tmp_path, num_fewshot=5, limit=8)
    ours = mmlu.evaluate(harness.from_folder(folder, "llmlab", progress=False).loglikelihood, SUBJECTS, 5, 8)
    via_hf = mmlu.evaluate(harness.from_folder(folder, "hf", progress=False).loglikelihood, SUBJECTS, 5, 8)
    truncated = 0
    for s in SUBJECTS:
        samples = sorted(theirs["samples"][f"mmlu_{s}"], key=lambda x: x["doc_id"])
        mine = [r for r in ours["questions"] if r["subject"] == s]
        shots = mmlu.load(s, "dev")
        assert len(samples) == len(mine) == 8
        for sample, q, r in zip(samples, mmlu.load(s)[:8], mine, strict=True):
            assert [tuple(a) for a in sample["arguments"]] == mmlu.requests(q, shots)
            lls = [float(x[0][0]) for x in sample["resps"]]
            np.testing.assert_allclose(r["loglikelihoods"], lls, atol=1e-5, rtol=0)
            assert float(sample["acc"]) == float(r["prediction"] == r["answer"])
            truncated += len(folder_tokens(folder, sample["arguments"][0][0])) >= CONTEXT
        assert theirs["results"][f"mmlu_{s}"]["acc,none"] == ours["subjects"][s]["acc"]
    np.testing.assert_allclose([r["loglikelihoods"] for r in via_hf["questions"]],
                               [r["loglikelihoods"] for r in ours["questions"]], atol=1e-5)
    assert truncated > 0  # some prompts were cut on the left, the same way
    n = sum(ours["subjects"][s]["n"] for s in SUBJECTS)
    assert ours["mmlu"]["acc"] == pytest.approx(sum(ours["subjects"][s]["acc"] * 8 for s in SUBJECTS) / n)


def folder_tokens(folder: Path, text: str) -> list[int]:
    return _tokenizer(folder).encode(text)


@functools.cache
def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def test_zero_shot_prompt_is_lm_evals_template():
    q = mmlu.Question("college_physics", " Why?\n", ("a", "b", "c", "d"), 2)
    assert mmlu.requests(q)[1] == ("The following are multiple choice questions (with answers) about college "
                                   "physics.\n\nWhy?\nA. a\nB. b\nC. c\nD. d\nAnswer:", " B")
    assert harness.split_pair("x: ", "A") == ("x:", " A") and mmlu.predict([-3.0, -1.0, -1.0, -2.0]) == 1


def test_completions_endpoint_backend_on_the_inference_service(folder):
    """``CompletionsLM`` against a real ``llmlab serve inference`` process (echo + logprobs, the request
    lm-eval's local-completions sends): the same log-likelihoods as the model run in this process, and
    OpenAI's logprobs layout (first prompt token None, text offsets into the echoed text)."""
    proc, base = serve_inference(folder, "--max-batch", "2")
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x")
        r = client.completions.create(model=folder.name, prompt="Answer: B", echo=True, logprobs=2, max_tokens=1,
                                      temperature=0)
        lp = r.choices[0].logprobs
        assert r.choices[0].text.startswith("Answer: B") and lp.token_logprobs[0] is None
        assert "".join(lp.tokens) == r.choices[0].text
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
        assert all(len(top) == 2 for top in lp.top_logprobs[1:])
        with pytest.raises(openai.BadRequestError, match="echo"):
            client.completions.create(model=folder.name, prompt="x", echo=True, stream=True)
        short = [q for q in mmlu.load("anatomy") if len(folder_tokens(folder, mmlu.context(q))) < CONTEXT - 2][:3]
        reqs = [r for q in short for r in mmlu.requests(q)]
        served = harness.CompletionsLM(f"{base}/v1", folder.name, progress=False).loglikelihood(reqs)
        local = harness.from_folder(folder, progress=False).loglikelihood(reqs)
        np.testing.assert_allclose([x for x, _ in served], [x for x, _ in local], atol=1e-5)
        assert [g for _, g in served] == [g for _, g in local]
    finally:
        proc.kill()
        proc.wait()


def test_cli_eval_mmlu(folder, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([CLI, "eval", "mmlu", "--model", str(folder), "--subjects", "anatomy,sociology", "--limit", "6",
                        "-k", "1", "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    saved = json.loads((out / "results.json").read_text())
    assert summary["mmlu"]["n"] == 12 and set(summary["categories"]) == {"stem", "social_sciences"}
    assert len(saved["questions"]) == 12 and (out / "mmlu.png").stat().st_size > 1000
    assert "| **MMLU** (1-shot) | | 12 |" in (out / "table.md").read_text()
    for args, message in ((["--subjects", "nope"], "unknown subjects: nope"), (["-k", "6"], "--num-fewshot"),
                          (["--model", str(tmp_path)], "not a model folder")):
        bad = subprocess.run([CLI, "eval", "mmlu", "--model", str(folder), *args], capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode == 2 and message in " ".join((bad.stderr + bad.stdout).split()), (args, bad.stderr)


def test_completions_backend_speaks_vllms_protocol():
    """By contract (vLLM needs a GPU): the request is the one lm-eval's local-completions sends to vLLM
    (the whole text as the prompt, echo, logprobs=1, max_tokens=1, greedy), and a response in vLLM's
    layout (first prompt token's logprob None, text offsets into the echoed text, the generated token last)
    is read as the sum over the continuation's tokens only. The server is an httpx mock transport."""
    import httpx

    seen = []
    tokens = ["Q", ":", " 2", "+", "2", "?", "\nAnswer", ":", " B", "\n"]  # the prompt's 9 tokens + 1 generated
    logprobs = [None, -1.0, -2.0, -0.5, -0.25, -3.0, -0.1, -0.2, -1.5, -0.7]
    top = [None] + [{t: lp} for t, lp in zip(tokens[1:], logprobs[1:], strict=True)]
    top[8] = {" A": -0.4, " B": -1.5}

    def vllm(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        text = "".join(tokens)
        return httpx.Response(200, json={"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "text": text, "finish_reason": "length",
                                                      "logprobs": {"tokens": tokens, "token_logprobs": logprobs,
                                                                   "top_logprobs": top, "text_offset": [
                                                                       sum(map(len, tokens[:i])) for i in
                                                                       range(len(tokens))]}}],
                                         "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})

    lm = harness.CompletionsLM("http://vllm.test/v1", "m", progress=False,
                               http_client=httpx.Client(transport=httpx.MockTransport(vllm)))
    [(ll, greedy)] = lm.loglikelihood([("Q: 2+2?\nAnswer:", " B")])
    assert seen == [{"model": "m", "prompt": "Q: 2+2?\nAnswer: B", "echo": True, "logprobs": 1, "max_tokens": 1,
                     "temperature": 0}]
    assert ll == -1.5 and greedy is False  # " A" was likelier: not greedy
