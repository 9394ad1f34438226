"""The monitor service: drift detection, confidence tracking, live performance and alerts."""
