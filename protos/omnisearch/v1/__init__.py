"""Version 1 of the OmniSearchSage serving contract."""
