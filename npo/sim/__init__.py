"""The paper's experiments as a pure, vectorised simulation (all seeds of a condition advance together)."""
