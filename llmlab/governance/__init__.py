"""Responsible AI and governance (lab m20): bias metrics (StereoSet, CrowS-Pairs), toxicity, licenses and
model cards."""
