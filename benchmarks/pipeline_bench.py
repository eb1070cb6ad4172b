"""The m17 pipeline on CPU: HTML extraction with resiliparse against trafilatura on the same pages, and the
document stages (extract, language, Gopher, C4, toxicity, dedup keys) on Ray Data against the same stage
functions in a plain Python loop, which is what a user would write first. Documents/s and MB/s as ratios.
The Common Crawl samples are read REPEAT times (as REPEAT sources) so there is enough work to spread.

    python benchmarks/pipeline_bench.py        (a local Ray head: started if none answers)
"""

from __future__ import annotations

import os
import statistics
import time

# before anything imports Ray: its driver must reach the loopback-only local head as 127.0.0.1
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from llmlab.data import resolve  # noqa: E402
from llmlab.pipeline import extract, run, toxicity, warc  # noqa: E402

REPEAT = 6


def _extraction() -> dict:
    pages = [extract.decode_http(r.body)[2] for name in ("CC-MAIN-2020-34-sample.warc.gz", "whirlwind.warc.gz")
             for r in warc.records(resolve(f"commoncrawl/{name}"), types=("response",))]
    out = {"pages": len(pages), "mb": sum(len(p.encode()) for p in pages) / 1e6}
    for name in extract.EXTRACTORS:
        extract.html_to_text(pages[0], name)  # imports and first-call setup
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for p in pages:
                extract.html_to_text(p, name)
            times.append(time.perf_counter() - t0)
        out[name] = {"seconds": statistics.median(times), "pages_per_s": len(pages) / statistics.median(times)}
    out["trafilatura_over_resiliparse"] = out["trafilatura"]["seconds"] / out["resiliparse"]["seconds"]
    return out


def main() -> dict:
    import ray

    from llmlab.platform.jobs import local

    texts, labels = toxicity.load_davidson()
    classifier = toxicity.train(texts, labels)
    cfg = run.PipelineConfig(sources=run.SAMPLES * REPEAT)
    t0 = time.perf_counter()
    plain = run.process_local(cfg, classifier)
    t_plain = time.perf_counter() - t0
    local.ensure(None)
    ray.init(address=f"127.0.0.1:{local.DEFAULT_GCS_PORT}", log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        run.process(cfg, classifier)  # warm-up: workers started, modules imported
        t0 = time.perf_counter()
        on_ray = run.process(cfg, classifier)
        t_ray = time.perf_counter() - t0
        cpus = ray.cluster_resources().get("CPU", 0)
    finally:
        ray.shutdown()
    mb = sum(d["bytes_read"] for d in plain) / 1e6
    same = [(d["id"], d["dropped"]) for d in on_ray] == [(d["id"], d["dropped"]) for d in plain]
    return {"name": "pipeline", "extraction": _extraction(), "documents": len(plain), "mb": mb, "ray_cpus": cpus,
            "plain_loop": {"seconds": t_plain, "docs_per_s": len(plain) / t_plain, "mb_per_s": mb / t_plain},
            "ray_data": {"seconds": t_ray, "docs_per_s": len(plain) / t_ray, "mb_per_s": mb / t_ray},
            "ray_over_plain_speedup": t_plain / t_ray, "same_decisions": same}


def report(res: dict) -> None:
    ex = res["extraction"]
    print(f"HTML to text on {ex['pages']} Common Crawl pages ({ex['mb']:.2f} MB): resiliparse "
          f"{ex['resiliparse']['pages_per_s']:,.0f} pages/s, trafilatura "
          f"{ex['trafilatura']['pages_per_s']:,.0f} pages/s ({ex['trafilatura_over_resiliparse']:.1f}x the time)")
    print(f"m17 document stages on {res['documents']} documents ({res['mb']:.1f} MB read): plain loop "
          f"{res['plain_loop']['docs_per_s']:,.1f} docs/s, Ray Data ({res['ray_cpus']:g} CPUs) "
          f"{res['ray_data']['docs_per_s']:,.1f} docs/s: {res['ray_over_plain_speedup']:.2f}x; "
          f"same decisions: {res['same_decisions']}")


if __name__ == "__main__":
    report(main())
