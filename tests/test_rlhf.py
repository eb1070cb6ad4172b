"""The toy chatbot task's data, prompts and gold rules. (The learning itself, SFT, the reward model, PPO and
DPO judged on held-out prompts, is lab m13's quick deliverable: tests/test_labs.py runs it as `make run`
does, PPO on Ray actors; tests/test_rlhf_metrics.py runs PPO in one process.)"""

from __future__ import annotations

from llmlab.rlhf import task


def test_task_prompts_vocabulary_and_gold():
    data = task.load()
    assert all(len(task.prompt_words(t, tpl)) == task.PROMPT_LEN for t in task.TOPICS
               for tpl in task.TRAIN_TEMPLATES + task.HELD_OUT_TEMPLATES)
    assert not set(task.TRAIN_TEMPLATES) & set(task.HELD_OUT_TEMPLATES)
    assert all(len(data.by_topic[t]) >= 50 for t in task.TOPICS) and len(data.toxic) > 5000
    assert data.vocab.decode(data.vocab.encode(["the", "dog", "zzzz"]) + [2, 5]) == ["the", "dog", "<unk>"]
    assert task.gold("dog", ["the", "dog", "ran"], 0.1) == 1 and task.gold("dog", ["a", "cat"], 0.95) == -1
    mix = data.sft_examples(4000, seed=0)
    on_topic = sum(topic in reply for topic, _, reply in mix) / len(mix)
    assert 0.2 < on_topic < 0.35  # one reply in four drawn on the topic (and some by chance)
