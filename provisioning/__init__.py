"""duet-edge provisioning package."""
