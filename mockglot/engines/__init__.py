"""Recognizers: how a speaker's audio becomes partial and final transcripts."""
