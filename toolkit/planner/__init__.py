"""The planner: pure functions from (model, hardware, settings, calibration) to ranked Plans."""
