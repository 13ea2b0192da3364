"""White-box monitors: does the model think "car" when it says "cat"? (`whitebox: true` in the eval config)

model.py reads the residual stream; positions.py picks the tokens; lens.py ranks words through the final norm
and unembedding; probe.py is the linear concept probe; reading.py reads one condition's answers; setup.py
trains the probe and reads the base model's eval answers; summary.py turns readings into the run log's types.
"""

WHITEBOX_MONITORS = ("wb_code_aware", "wb_code_agnostic")
