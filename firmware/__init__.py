"""duet-edge firmware package."""
