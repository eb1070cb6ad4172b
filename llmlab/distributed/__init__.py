"""Training at scale (lab m12): bf16 rounding and dynamic loss scaling (:mod:`.precision`), ZeRO's
partitioning and memory formulas (:mod:`.zero`), activation checkpointing (:mod:`.checkpointing`),
throughput, MFU and large-batch learning rates (:mod:`.throughput`), and ZeRO-3 bf16 pretraining as a Ray
Train job driving DeepSpeed (:mod:`.pretrain`).

DeepSpeed and Ray are imported only inside :mod:`.pretrain`'s functions, so the rest imports with torch alone.
"""
