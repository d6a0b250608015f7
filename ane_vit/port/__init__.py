"""Copy the weights of a reference model into its ANE twin.

The reference layers use ``nn.Linear`` (weight ``(out, in)``) and a fused qkv; the ANE
layers use 1x1 ``nn.Conv2d`` (weight ``(out, in, 1, 1)``) and separate q, k, v. A linear
layer *is* a 1x1 convolution, so porting is a reshape of each weight, no arithmetic.
``load_seed_state_dict`` loads a state dict saved from the seed's MOAT (its key names and
relative-position orientation) into ours.
"""

from .attention import linear_to_conv1x1, port_attention_weights, seed_rpe_table_to_ane
from .deit import port_deit_weights
from .moat import port_moat_weights
from .seed import load_seed_state_dict, seed_key, to_seed_state_dict

__all__ = [
    "linear_to_conv1x1",
    "port_attention_weights",
    "port_deit_weights",
    "port_moat_weights",
    "seed_rpe_table_to_ane",
    "seed_key",
    "load_seed_state_dict",
    "to_seed_state_dict",
]
