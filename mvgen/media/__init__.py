"""Audio and video I/O on soundfile and PyAV (no ffmpeg binary needed)."""
