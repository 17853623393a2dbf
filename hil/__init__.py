"""duet-edge hil package."""
