"""Evaluation on labelled real-world fault data: predictor, simulated engineers, replay through the loop, counting."""
