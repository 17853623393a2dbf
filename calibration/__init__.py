"""duet-edge calibration package."""
