"""White-box monitors: does the model think "car" when it says "cat"? (`whitebox: true` in the eval config)

model.py reads the residual stream; positions.py picks the tokens; lens.py ranks words through the final norm
and unembedding; probe.py is the linear concept probe; blackbox.py is the baseline an auditor with the output
log-probabilities alone could compute; reading.py reads one condition's answers; setup.py trains the probe and
reads the base model's calibration answers; summary.py turns readings into the run log's types.
"""

# Monitors read from the residual stream (the probe's layer, the lens's intermediate layers)
WHITEBOX_MONITORS = ("wb_code_aware", "wb_code_agnostic", "wb_lens_intermediate_rank")
# Monitors read from the same forward pass's output logits only: what an API's log-probabilities show. Reported
# beside the white-box ones as the baseline they must beat, never counted as white-box.
BLACKBOX_MONITORS = ("bb_output_rank",)
