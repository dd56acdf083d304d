"""Segmentation stage core (no Dagster): cut long recordings into <= 30 s speech segments.

So far only the pure planner exists (:mod:`asr_distill.stages.segment.plan`); the VAD lives in
:mod:`asr_distill.audio.vad`.
"""
