"""Inference helpers that need no model: subtitles.py writes SRT / WebVTT from timed segments."""
