"""Data-driven corpora of real-world COCO-format files, read by the tests."""
