"""CLI sub-commands of the gateway itself."""
