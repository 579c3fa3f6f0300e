"""The OmniSearchSage model: query encoder, entity encoder, compatibility heads, training, evaluation."""
