"""Builders of tiny random-weight checkpoints in the Hugging Face format, for tests, demos and
benchmarks on machines that never reach the Hub. The audio they make is noise; everything else
(shapes, rates, durations, seeds, progress) is real."""
