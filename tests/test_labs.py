"""The lab contract for every built lab: the reference earns every point, every seeded bug loses some,
and the quick deliverable writes its metrics, report and plots."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
from pathlib import Path

import pytest

from llmlab.labs import BY_ID, built_labs, catalogue, get_lab, run_deliverable
from llmlab.labs.base import CHEATS
from llmlab.platform.grading import grade, grade_source
from llmlab.platform.jobs.deliverable_job import DeliverableRecord

LABS = built_labs()
BUGS = [(lab, bug) for lab in LABS for bug in get_lab(lab).bugs]


def test_registry_lists_twenty_labs_and_the_built_ones():
    labs = catalogue()
    assert [lab.id for lab in labs] == [f"m{i:02d}" for i in range(1, 21)]
    assert {f"m{i:02d}" for i in range(1, 11)} <= set(LABS)


def test_registry_follows_the_course_syllabus():
    """Ids, titles and topics as the user's syllabus table (shared/SYLLABUS.md) gives them."""
    syllabus = Path(__file__).resolve().parents[2] / "shared" / "SYLLABUS.md"
    rows = [ln.split("|")[1:-1] for ln in syllabus.read_text().splitlines()
            if re.match(r"\| m\d\d \|", ln)]
    table = {cells[0].strip(): (cells[1].strip(), [t.strip() for t in cells[2].split(",")]) for cells in rows}
    assert {lab.id: (lab.title, lab.topics) for lab in catalogue()} == table


@pytest.mark.parametrize("lab_id", LABS)
def test_checks_cover_the_graded_deliverable(lab_id):
    """Every item of the syllabus's graded deliverable is graded by a check; every check names an item or a
    topic of its module."""
    entry, lab = BY_ID[lab_id], get_lab(lab_id)
    assert all(c.grades in entry.deliverable + entry.topics for c in lab.checks), \
        [(c.name, c.grades) for c in lab.checks]
    assert [item for item in entry.deliverable if not any(c.grades == item for c in lab.checks)] == []


@pytest.mark.parametrize("lab_id", LABS)
def test_lab_contract_is_complete(lab_id):
    lab = get_lab(lab_id)
    assert len(lab.bugs) >= 3, "every lab seeds at least 3 bugs"
    assert lab.checks and all(c.points > 0 and c.description for c in lab.checks)
    assert all(callable(lab.reference_object(name)) for name in lab.names)
    compile(lab.starter_source(), "starter.py", "exec")


@pytest.mark.parametrize("lab_id", LABS)
def test_reference_earns_full_marks(lab_id):
    """On fresh random inputs (the slow seed sweep below grades it over many seeds)."""
    lab = get_lab(lab_id)
    result = grade_source(lab, lab.submission_source(), trusted=True)
    assert result.score == result.max_score, (result.seed, [(c.name, c.message) for c in result.checks
                                                            if not c.passed])


@pytest.mark.parametrize("lab_id, bug", BUGS, ids=[f"{lab}-{bug}" for lab, bug in BUGS])
def test_seeded_bug_is_caught(lab_id, bug):
    """Graded as ``llmlab grade -x`` does: the checks after the first failure are not run (the slow seed
    sweep grades every bug in full). In-process: llmlab's own code needs no sandbox, and the sandbox's
    start (an interpreter importing torch) was most of each bug's time; the reference's grading above goes
    through the sandbox."""
    lab = get_lab(lab_id)
    result = grade_source(lab, lab.submission_source(bug), trusted=True, stop_at_first_failure=True,
                          in_process=True)
    failed = [c for c in result.checks if not c.passed]
    assert failed, f"seeded bug {bug} passed every check of {lab_id}"
    assert failed[0].message and not failed[0].message.startswith("not run")
    after = result.checks[result.checks.index(failed[0]) + 1:]
    assert all(c.message == "not run: grading stopped at the first failed check" and c.points == 0 for c in after)


def test_in_process_grading_equals_the_sandbox():
    """The seeded bugs' in-process grading judges what the sandbox would: same seed, same verdicts and
    messages (m02: its values include tensors and a spec class); untrusted code is never graded in-process."""
    lab = get_lab("m02")
    for source in (lab.submission_source(), lab.submission_source(next(iter(lab.bugs))), lab.cheat_source("nan")):
        boxed, here = (grade_source(lab, source, seed=5, trusted=True, in_process=p) for p in (False, True))
        assert [(c.passed, c.message) for c in here.checks] == [(c.passed, c.message) for c in boxed.checks]
    with pytest.raises(ValueError, match="trusted"):
        grade_source(lab, lab.submission_source(), in_process=True)


def _names_in(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_in(const)
    return names


def _reached(lab, check, kind: str) -> set[str]:
    """The spec functions a check reaches: named in ctx.call("...") or as sub.NAME in a probe, in the check
    or any module-level helper of its lab that it uses (followed transitively)."""
    module = importlib.import_module(lab.module)
    seen, found, todo = set(), set(), [check.fn]
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        source = inspect.getsource(fn)
        found |= {n for n in lab.names if re.search(rf"ctx\.call\(\s*[\"']{n}[\"']|sub\.{n}\b", source)}
        found |= {n for n in lab.cheat_classes.get(kind, {}) if re.search(rf"[\"']{n}[\"']", source)}  # by name
        todo += [obj for name in _names_in(fn.__code__) if inspect.isfunction(obj := getattr(module, name, None))
                 and obj.__module__ == module.__name__]
    classes = {n for n in lab.names if inspect.isclass(lab.reference_object(n))} - set(lab.cheat_classes.get(kind, {}))
    # a function returning one of the spec's classes (m02's ffn_block returns a Tensor) is not poisoned either
    return {n for n in found - classes
            if not any(c in str(inspect.signature(lab.reference_object(n)).return_annotation) for c in classes)}


# re-export and NaN in make test; constant and wrong-dtype outputs with the slow tests (make test-all)
CHEAT_CASES = [pytest.param(lab, kind, id=f"{lab}-{kind}",
                            marks=[pytest.mark.slow] if kind in ("constant", "dtype") else [])
               for lab in LABS for kind in CHEATS]


@pytest.mark.sandbox
@pytest.mark.parametrize("lab_id, kind", CHEAT_CASES)
def test_cheating_earns_nothing(lab_id, kind):
    """Re-exporting llmlab's reference scores 0; constant, NaN and wrongly typed values from the
    reference's functions fail every check that judges them (classes are not poisoned: their checks stand).
    The poisoned submissions are llmlab's own code, graded in-process."""
    lab = get_lab(lab_id)
    result = grade_source(lab, lab.cheat_source(kind), trusted=kind != "reexport", in_process=kind != "reexport")
    if kind == "reexport":
        assert result.score == 0 and "not available to submissions" in result.error
        return
    affected = {c.name for c in lab.checks if _reached(lab, c, kind)}
    assert affected, "every lab has checks on functions"
    wrongly_passed = [c.name for c in result.checks if c.passed and c.name in affected]
    assert not wrongly_passed, (result.seed, wrongly_passed)


@pytest.mark.sandbox
@pytest.mark.parametrize("lab_id", LABS)
def test_starter_is_self_contained_and_earns_nothing(lab_id, tmp_path):
    """The starter a learner begins from imports nothing from llmlab, imports in the sandbox, and every
    check fails with NotImplementedError until the learner writes the code."""
    lab = get_lab(lab_id)
    source = lab.starter_source()
    assert "llmlab" not in "".join(line for line in source.splitlines() if line.startswith(("import", "from")))
    path = tmp_path / "starter.py"
    path.write_text(source)
    result = grade(lab, path)
    assert result.error is None and result.score == 0
    assert all("NotImplementedError" in c.message or "could not be judged" in c.message for c in result.checks), \
        [c.message for c in result.checks if "NotImplementedError" not in c.message]


def _m01(m, out):
    assert m["svd_max_rel_error"] <= 1e-6 and len(m["svd_rel_error_per_matrix"]) == m["matrices"]
    assert m["eckart_young_max_gap"] < 1e-10 and m["attention_max_abs_error_vs_sdpa"] < 1e-6


def _m04(m, out):
    assert m["gd_rate_max_gap_to_theory"] < 1e-9 and m["pl_bound_holds"]
    assert all(acc > 0.2 for acc in m["cifar_test_accuracy"].values())  # chance is 0.1


def _m05(m, out):
    assert m["max_gap_in_standard_errors"] < 3  # bias^2 + variance + noise = MSE within Monte Carlo error
    assert m["vc"]["halfplane"]["d"] == 3 and m["vc"]["rectangle"]["d"] == 4
    assert 0.6 * 100 <= m["double_descent"]["peak_at"] <= 1.5 * 100  # near the interpolation threshold n


def _m06(m, out):
    assert m["distinct_substrings_match_naive"]
    # Ukkonen is linear, counted (the time exponent depends on the load): over n + 1 characters with the terminal,
    # at most n + 1 insertions, n + 1 phase ends, and n + 1 walks down (each spends `length` a phase end added)
    for counts in m["ukkonen_steps"].values():
        assert all(steps <= 3 * (n + 1) for n, steps in zip(m["sizes"], counts, strict=True)), counts
    assert m["layers_to_full_reach"]["strided"] == 2 and m["layers_to_full_reach"]["dilated"] == -1


def _m07(m, out):
    assert all(abs(s - 1) < 1e-9 for s in m["kn_distribution_sums"])
    kn3 = next(r for r in m["ngram"] if r["n"] == 3)
    assert kn3["kneser_ney"] < kn3["add_0.01"] and m["gru_val_loss"] < math.log(kn3["kneser_ney"]) + 0.3


def _m08(m, out):
    assert m["max_abs_error_vs_torch_sdpa"] < 1e-6
    # the cost as torch's FlopCounterMode counts it (the measured time's exponent depends on the machine's load)
    assert all(f == 4 * int(n) ** 2 * 64 for n, f in m["flops_by_n"].items())
    assert abs(m["flop_exponent_in_n"] - 2) < 1e-9 and abs(m["flop_exponent_in_d"] - 1) < 1e-9
    assert m["entropy_limits"]["T_0.01"] < 1e-3 and abs(m["entropy_limits"]["T_100"] - math.log(16)) < 1e-2


def _m09(m, out):
    assert m["val_loss"] <= 2.2  # the quick profile's fixed steps (about 5 minutes here, not a timing check)
    assert m["hf_max_logit_diff"] < 1e-4 and m["hf_architecture"] == "LlamaForCausalLM"
    assert (out / "hf-model" / "model.safetensors").exists() and (out / "hf-model" / "tokenizer.json").exists()


def _m10(m, out):
    trained = next(k for k in m["isotropy"] if k.startswith("trained"))
    assert m["all_agree"] and m["isotropy"]["random init"] > m["isotropy"][trained]


def _m18(m, out):
    assert m["size_ratio"] >= 8  # the draft is at least 8x smaller
    ppl = m["perplexity"]
    assert ppl["fp32"] <= ppl["gptq-3bit"] <= ppl["rtn-3bit"] and abs(ppl["int8"] - ppl["fp32"]) < 0.05 * ppl["fp32"]
    assert all(0 < r["acceptance"] <= 1 and r["tokens_per_step"] >= 1 for r in m["speculative"])


def _m11(m, out):
    assert all(m["within_published_se"].values())  # Chinchilla's fit: Besiroglu et al.'s values within their SEs
    assert 15 < m["plan_1e21"]["tokens_per_param"] < 30 and 0.45 < m["n_opt_exponent_a"] < 0.55
    assert m["kaplan_exponents"]["beta (L(D))"]["exponent"] > 0  # more data, lower loss
    assert m["zoo"]["final_val_loss"][-1] < m["zoo"]["final_val_loss"][0]  # the largest model beats the smallest


def _m12(m, out):
    assert m["world_size"] == 2 and m["config"]["zero_stage"] == 3 and m["config"]["bf16"]
    assert m["final_val_loss"] < m["first_val_loss"] - 1.0 and m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1
    assert m["transformers_max_logit_diff"] < 1e-4  # the gathered ZeRO-3 shards load in transformers
    assert m["zero3_layout_is_partition_flat"]  # DeepSpeed's slices are llmlab's partition_flat
    sweep = {s["stage"]: s for s in m["stage_sweep"]}
    assert sorted(sweep) == [0, 1, 2, 3]
    # stage 0 holds the whole bf16 model and fp32 Adam state (14 bytes/param), stages 1-2 half the state
    assert abs(sweep[0]["bytes_between_steps"] / sweep[0]["params"] - 14) < 0.5
    assert sweep[1]["bytes_between_steps"] < 0.7 * sweep[0]["bytes_between_steps"]
    assert m["checkpoint_memory_ratio"] < 0.2 and m["grad_accumulation_max_param_diff"] < 1e-5


def _m13(m, out):
    ev, h = m["evaluation"], m["history"]
    assert m["reward_model"]["held_out_accuracy"] > 0.8 and m["rollout_workers"] == 2
    assert m["reward_last"] > m["reward_first"] + 1.0  # the reward model's score of the policy's replies
    assert 0 < m["kl_last"] < 3 * m["kl_target"]  # within a band around the KL target (6 nats per reply)
    for a, b in zip(h, h[1:], strict=False):  # the controller moves toward the target
        assert (b["kl_coef"] > a["kl_coef"]) == (a["kl"] > m["kl_target"])
    # on 512 held-out prompts, by the task's own rules: both methods beat the supervised policy. With 500 SFT
    # steps, over seeds 0-4 (256 prompts each) PPO gained 0.23-0.32 and DPO 0.22-0.39; with the quick profile's
    # 300 (149 s alone instead of ~300), seed 0: PPO +0.21, DPO +0.21, reward model 0.846. PPO on Ray actors is
    # not bit-reproducible (seed 0 gave 0.20 and 0.27 in two runs), hence the margin
    assert ev["ppo"]["gold"] > ev["sft"]["gold"] + 0.1 and ev["ppo"]["toxic"] < ev["sft"]["toxic"]
    assert ev["dpo"]["gold"] > ev["sft"]["gold"] + 0.1


def _m14(m, out):
    zoo = m["zoo"]
    assert len(zoo) == 3 and [r["perplexity"] for r in zoo] == sorted((r["perplexity"] for r in zoo), reverse=True)
    for r in zoo:  # tiny Shakespeare models know no MMLU: within the 99.9% band around chance
        assert r["questions"] == 570 and abs(r["mmlu"] - 0.25) < 3.3 * (0.25 * 0.75 / 570) ** 0.5
    shakespeare = next(v for k, v in m["contamination"].items() if k.startswith("Tiny Shakespeare"))
    assert shakespeare["n"] == 570 and shakespeare["dirty"] == 0
    dp = m["privacy_utility"]
    assert dp[0]["noise"] is None and dp[0]["auc"] > 0.95
    private = dp[1:]
    assert [r["epsilon"] for r in private] == sorted((r["epsilon"] for r in private), reverse=True)
    assert private[0]["auc"] > 0.9 and private[0]["auc"] > private[-1]["auc"] and private[-1]["epsilon"] < 0.5
    assert abs(m["standard_epsilons"]["Abadi et al. MNIST (q 256/60000, noise 1.1, 60 epochs)"] - 2.597) < 1e-3


def _m15(m, out):
    n, sp, lt = m["ntk"], m["spectra"], m["lottery"]
    assert n["agreement_rel"] < 1e-12  # the Jacobian contraction and the NTK-vector products (float64)
    # the kernel moves less as the width grows (measured slope -0.20 over widths 16-128; -0.36 over 16-256)
    assert n["change_slope"] < -0.1 and n["widths"][-1]["kernel_change"] < n["widths"][0]["kernel_change"]
    assert all(r["last_loss"] < r["first_loss"] for r in n["widths"])
    # GOE: KS 0.003 to the semicircle; LeNet's fc1: KS 0.011 to MP at init with nothing above the edge, 20
    # eigenvalues above it after training and a heavier tail (alpha 12.1 -> 3.8)
    assert sp["wigner"]["ks"] < 0.02 and sp["init"]["ks_mp"] < 0.03 and sp["init"]["outliers"] == 0
    assert sp["trained"]["outliers"] > 5 and sp["trained"]["alpha"] < sp["init"]["alpha"]
    curves = lt["curves"]
    assert lt["rounds"] == 8 and all(0.16 < c[-1][0] <= 0.2 for c in curves.values())
    imp, random_pruning = next(iter(curves.values())), curves["random pruning"]
    # measured at 16.8% (2 epochs): IMP 0.416, random pruning 0.408, random re-init 0.399, dense 0.356
    assert imp[0][1] > 0.3 and imp[-1][1] > random_pruning[-1][1] - 0.02
    assert all((out / p).exists() for p in ("ntk.png", "spectra.png", "lottery.png"))


def _m19(m, out):
    # the traffic switches from Shakespeare to Wikipedia: PSI of per-token NLL from under 0.1 to over 0.25, and
    # a real Prometheus fires LLMLabPerplexityDrift; every monitoring-dashboard query returns data
    assert m["prometheus"] and m["psi_calm_max"] < 0.1 < 0.25 < m["psi_final"] and m["ks_final"] > m["ks_calm_max"]
    assert m["seconds_to_alert"] is not None and m["seconds_to_alert"] > 0
    assert m["dashboard_queries"] and all(q["series"] > 0 for q in m["dashboard_queries"].values())
    assert (out / "drift.png").exists() and (out / "throughput_latency.png").exists()


def _m16(m, out):
    sweep = m["sweep"]
    assert {r["index"] for r in sweep} == {"flat", "hnsw", "ivf_flat", "ivf_pq", "ivf_pq_refine"}
    flat = next(r for r in sweep if r["index"] == "flat")
    assert flat["recall@5"] == 1.0 and flat["bytes_per_vector"] == pytest.approx(1536, rel=0.01)  # 384 floats
    # HNSW within 0.98 of exact at a fraction of its work, as FAISS counts distances computed (measured: 13.0x
    # fewer at M=32 efSearch 32 against 10,000; 7.3x at 5,000). Its speed-up in time is noisy at this size (one
    # thread: 8.7x at 10k beside another job) and not tested here; the >= 10x at ~100k is the benchmark's
    assert m["fewest_distances_at_098"]["index"] == "hnsw" and m["distance_saving_at_098"] > 4
    # IVF-PQ's 24- and 48-byte codes: 111 and 135 bytes per vector at 10k passages, of which ~87 are the coarse
    # centroids and PQ codebooks shared over so few vectors
    assert all(r["bytes_per_vector"] < 0.12 * flat["bytes_per_vector"] for r in sweep if r["index"] == "ivf_pq")
    # re-ranking PQ48's top 20 by SQ8 vectors: best recall@5 0.688 -> 0.922, at 519 bytes a vector (flat: 1,536)
    best = lambda kind: max(r["recall@5"] for r in sweep if r["index"] == kind)  # noqa: E731
    assert best("ivf_pq_refine") > best("ivf_pq") + 0.1
    assert all(r["bytes_per_vector"] < 0.4 * flat["bytes_per_vector"] for r in sweep if r["index"] == "ivf_pq_refine")
    qr = {name.split(" (")[0] if not name.startswith("dense (HNSW") else "hnsw": v["all"]["recall@5"]
          for name, v in m["question_recall"].items()}
    # measured: dense 0.944, HNSW 0.930, BM25 0.921, hybrid 0.965 over 800 questions (10k passages)
    assert qr["dense"] > 0.85 and qr["BM25"] > 0.8 and qr["hybrid"] >= max(qr["dense"], qr["BM25"]) - 0.01
    assert qr["hnsw"] > qr["dense"] - 0.03
    # fine-tuning on 128 pairs leaves held-out recall where it was (0.964, 165 questions; earlier configs: 512
    # pairs 0.939 -> 0.958 and 0.952, 256 pairs 0.939 -> 0.945): MiniLM was trained on such pairs; it must not
    # break the model. (The full profile's 11,009 pairs lift it: 0.804 -> 0.845 and 0.844 over 2,831 questions.)
    # Hard negatives are mined as DPR did: BM25's first non-gold passage was skipped for holding the answer for
    # 3 of the 128 questions here (892 of 11,009 in the full profile)
    assert m["negative_sampling"]["negatives_holding_the_answer"] > 0
    runs = m["negative_sampling"]["runs"]
    shipped = runs["as shipped"]["recall@5"]
    assert shipped > 0.85 and all(abs(r["recall@5"] - shipped) < 0.05 for r in runs.values())
    assert all(math.isfinite(r["last_loss"]) for name, r in runs.items() if name != "as shipped")
    # RAG through the two services: every gold paragraph holds an answer, the prompt holds what fits of the top 5
    rag = m["rag"]
    # measured (60 held-out questions, 10k passages): gold 0.917, an answer 0.917, in the prompt 0.883, EM 0,
    # F1 0.001
    assert rag["questions"] > 50 and rag["gold_recall@5"] > 0.8 and rag["recall@5"] >= rag["gold_recall@5"]
    assert 0.5 < rag["answer_in_prompt"] <= rag["recall@5"] and 1 <= rag["passages_in_prompt"] <= 5
    assert 0 <= rag["exact_match"] <= rag["f1"] <= 1 and (out / "rag.png").exists()
    assert rag["reader"]["steps"] > 0 and rag["reader"]["last_loss"] < rag["reader"]["first_loss"]


def _m17(m, out):
    stages = {r["stage"]: r for r in m["pipeline"]["stages"]}
    assert stages["read"]["dropped"] == {"truncated": 1}  # the cut WET record is reported, not a crash
    assert stages["language"]["dropped"]["ru"] >= 10 and m["pipeline"]["kept"] >= 2
    assert m["pipeline"]["toxicity_classifier"]["auc"] > 0.95 and m["minhash_max_abs_error"] < 0.15
    assert len(m["extraction"]) == 17 and m["pipeline"]["shards"]["train"]["shards"] >= 2
    hist = m["ddp"]["history"]
    assert m["ddp"]["world_size"] == 2 and hist[-1]["val_loss"] < hist[0]["val_loss"] - 0.5
    assert m["wandb_matches"] and m["wandb_rows"] == len(hist) and (out / m["wandb_run"]).is_dir()


def _m20(m, out):
    # a model pretrained on Ray Train, audited, and its card generated from the run and valid
    assert m["history"][-1]["val_loss"] < m["history"][0]["val_loss"] - 2  # measured 7.61 -> 4.49 (80 steps)
    ev, c = m["evals"], m["card"]
    assert c["problems"] == [] and c["license"] == "cdla-sharing-1.0" and c["datasets"] == ["tinystories"]
    assert (out / c["path"]).is_file() and c["results"] >= 6
    assert ev["stereoset"]["overall"]["count"] == 4229 and ev["crows_pairs"]["overall"]["count"] == 1508
    # measured: LMS 54.4, SS 53.0, ICAT 51.1; CrowS 0.507; MMLU 0.244 (chance) over 570 questions
    assert 50 < ev["stereoset"]["overall"]["lms"] < 100 and 0.2 < ev["mmlu"]["accuracy"] < 0.3
    tc = ev["toxicity_classifier"]  # measured: llmlab 0.916, TF-IDF + LR 0.845, balanced 0.905
    assert tc["llmlab"]["macro_f1"] > max(tc["tfidf_lr"]["macro_f1"], tc["tfidf_lr_balanced"]["macro_f1"])
    tg = ev["toxicity"]
    assert tg["overall"]["prompts"] == 60 and 0 <= tg["clean_reference"]["toxic_rate"] < 0.3
    assert (out / "bias.png").exists() and (out / "toxicity.png").exists()


# The quick deliverables' headline numbers, as the issues state them (labs whose numbers are plots only: none)
HEADLINES = {"m01": _m01, "m04": _m04, "m05": _m05, "m06": _m06, "m07": _m07, "m08": _m08, "m09": _m09,
             "m10": _m10, "m11": _m11, "m12": _m12, "m13": _m13, "m14": _m14, "m15": _m15, "m16": _m16, "m17": _m17,
             "m18": _m18, "m19": _m19, "m20": _m20}
# Deliverables that run Ray Train jobs: as `make run` runs them, a Ray job on the session's head (the Ray
# xdist group, see conftest.py) whose driver starts the Ray Train run
ON_RAY = {lab for lab in LABS if get_lab(lab).ray_workload}


def _deliverable_as_ray_job(lab_id: str, out_dir: Path, address: str) -> dict:
    from llmlab.platform.course import submit_deliverable
    from llmlab.platform.jobs import client, record

    job_id = submit_deliverable(address, lab_id, "quick", out_dir, learner="test")
    status = client.wait(job_id, address, timeout=900)
    logs = client.connect(address).get_job_logs(job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    return record.decode(logs, DeliverableRecord).metrics


# Quick deliverables that take over 20 s here run with the slow tests (make test-all), to keep make test within
# its 20 minutes. Their times as Ray jobs in `make run` (one thread, beside another job; the 8.3-min run at
# 34,741 tokens/s): m16 (10k passages embedded, indexes swept, MiniLM fine-tuned twice, RAG through both
# services: 119 s with the embeddings cached; embedding them takes 108 s more on a fresh machine), m20 (DDP on
# Ray Train, then StereoSet, CrowS-Pairs, MMLU, WikiText-2 and generation toxicity: 109 s), m19 (a model
# trained, served and watched by a real Prometheus: 101 s), m13 (SFT, a reward model, PPO on Ray actors and
# DPO: 70 s), m15 (the NTK at four widths and 33 lottery-ticket trainings: 64 s), m12 (40 ZeRO-3 steps and a
# 4-stage memory sweep: 57 s), m17 (the pipeline and DDP on its shards, 52 s), m11 (the zoo, 45 s), m09 (44 s),
# m14 (44 s), m18 (34 s), m10 (28 s), m03 (25 s) and m07 (24 s).
# make test still runs every lab's checks, seeded bugs and cheats, the reference through the sandbox, the quick
# deliverables of m01, m02, m04, m05, m06 and m08, and the Ray jobs of the heavy ones on tiny configs
# (test_ray_jobs.py, test_rlhf_ray.py, test_pipeline_ray.py)
HEAVY = {"m03", "m07", "m09", "m10", "m11", "m12", "m13", "m14", "m15", "m16", "m17", "m18", "m19", "m20"}
# m16's quick deliverable on a fresh machine (the embeddings not cached yet) under load: near the default 900 s
LONG = {"m16": 1800}


@pytest.mark.parametrize("lab_id", [pytest.param(lab, marks=[pytest.mark.ray] * (lab in ON_RAY)
                                                 + [pytest.mark.slow] * (lab in HEAVY)
                                                 + ([pytest.mark.timeout(LONG[lab])] if lab in LONG else []))
                                    for lab in LABS])
def test_quick_deliverable(lab_id, tmp_path, request):
    """The quick profile writes its metrics, report and plots, and reaches the stated headline numbers."""
    if lab_id in ON_RAY:
        record = _deliverable_as_ray_job(lab_id, tmp_path, request.getfixturevalue("ray_address"))
    else:
        record = run_deliverable(lab_id, "quick", tmp_path)
    DeliverableRecord(lab=lab_id, profile="quick", out_dir=str(tmp_path), metrics=record).model_dump_json()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["lab"] == lab_id and on_disk["schema_version"] == 1 and on_disk["metrics"]
    assert record["plots"] and all((tmp_path / p).stat().st_size > 1000 for p in record["plots"])
    assert (tmp_path / "report.md").read_text().startswith(f"# {lab_id}")
    if lab_id in HEADLINES:
        HEADLINES[lab_id](record["metrics"], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("lab_id", LABS)
def test_checks_are_stable_across_seeds(lab_id):
    """Over many seeds: the reference never loses a point and every seeded bug always loses some."""
    lab = get_lab(lab_id)
    for seed in range(10):
        result = grade_source(lab, lab.submission_source(), seed=seed, trusted=True, in_process=True)
        assert result.score == result.max_score, (seed, [(c.name, c.message) for c in result.checks if not c.passed])
    for bug in lab.bugs:
        for seed in range(5):
            result = grade_source(lab, lab.submission_source(bug), seed=seed, trusted=True, in_process=True)
            assert result.score < lab.max_score, (bug, seed)
