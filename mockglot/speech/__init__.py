"""Audio in and out: the mu-law codec, translation and speech synthesis."""
